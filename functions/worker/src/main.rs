//! The `worker` function. (Its handler arrives with the functions issue; today it checks its
//! configuration and backends and exits.)

use trace_adapters::runtime::{config_or_exit, init_logging, Backends};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = config_or_exit("worker");
    init_logging(config.log_format);
    Backends::from_config(&config).await?;
    Ok(())
}
