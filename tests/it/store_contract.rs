//! The `ChunkStore` contract against the on-disk store and S3 on the emulator.

use trace_adapters::store::fs::FsStore;
use trace_integration::{contract::store, s3_store};

#[tokio::test]
async fn fs_store_contract() {
    let dir = std::env::temp_dir().join(trace_integration::unique("fs-store"));
    store::run(&FsStore::new(&dir)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn s3_store_contract() {
    eprintln!("s3 on {}", trace_integration::emulator());
    store::run(&s3_store().await).await;
}
