//! Amazon S3 (or LocalStack / moto) through `aws-sdk-s3`.

use std::ops::Range;
use std::time::Duration;
use trace_core::encoding::ChunkEncoding;

use async_trait::async_trait;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use bytes::Bytes;
use trace_core::ports::{BackendError, ChunkStore, ObjectInfo, StoreError};

use super::{check_key, check_prefix};

/// One bucket.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

fn backend(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(BackendError::new("s3", op, e.to_string()))
}

fn sdk<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &'static str,
    key: &str,
    e: SdkError<E>,
) -> StoreError {
    let not_found = matches!(e.as_service_error().and_then(|s| s.code()), Some("NoSuchKey" | "NotFound"))
        || matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 404);
    if not_found {
        StoreError::NotFound(key.to_owned())
    } else {
        backend(op, DisplayErrorContext(e))
    }
}

impl S3Store {
    /// Puts an object; with `only_new`, only if none is at `key` (`If-None-Match: *`): whether it was
    /// written.
    async fn write(&self, key: &str, body: Bytes, only_new: bool) -> Result<bool, StoreError> {
        check_key(key)?;
        // The body's CRC-32, computed here and sent as a header: S3 still verifies the upload, and the
        // SDK sends a plain body instead of wrapping it in `aws-chunked` framing with a trailing
        // checksum (which every S3-compatible server must then unwrap). With that checksum the payload
        // need not also be hashed into the signature (`UNSIGNED-PAYLOAD`: one SHA-256 pass over
        // every byte saved; the headers are still signed).
        let crc32 = aws_smithy_types::base64::encode(crc32fast::hash(&body).to_be_bytes());
        // Chunks carry the headers a plain HTTP reader of a presigned URL needs: NDJSON, and gzip
        // as a transfer detail that browsers and `curl --compressed` undo.
        let (content_type, content_encoding) = match ChunkEncoding::of_key(key) {
            Some(encoding) => ("application/x-ndjson", encoding.content_encoding()),
            None if key.ends_with(".json") => ("application/json", None),
            None => ("application/octet-stream", None),
        };
        let sent = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .set_content_encoding(content_encoding.map(str::to_owned))
            .checksum_crc32(crc32)
            .set_if_none_match(only_new.then(|| "*".to_owned()))
            .body(ByteStream::from(body))
            .customize()
            .disable_payload_signing()
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            // 412: an object is there. 409 (`ConditionalRequestConflict`): a concurrent write of the
            // same key is in progress, which wins or has won.
            Err(SdkError::ServiceError(e)) if only_new && matches!(e.raw().status().as_u16(), 412 | 409) => {
                Ok(false)
            }
            Err(e) => Err(sdk("put_object", key, e)),
        }
    }

    /// The bucket `bucket` reached through `client`.
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        S3Store { client, bucket: bucket.into() }
    }

    /// Creates the bucket if it does not exist.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        match self.client.create_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.code(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) => Ok(()),
            Err(e) => Err(backend("create_bucket", DisplayErrorContext(e))),
        }
    }

    async fn read(&self, key: &str, range: Option<String>) -> Result<Bytes, StoreError> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range)
            .send()
            .await
            .map_err(|e| sdk("get_object", key, e))?;
        let body = out.body.collect().await.map_err(|e| backend("get_object", e))?;
        Ok(body.into_bytes())
    }
}

#[async_trait]
impl ChunkStore for S3Store {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.write(key, body, false).await.map(|_| ())
    }

    async fn put_new(&self, key: &str, body: Bytes) -> Result<bool, StoreError> {
        self.write(key, body, true).await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        self.read(key, None).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            check_key(key)?;
            return Ok(Bytes::new());
        }
        match self.read(key, Some(format!("bytes={}-{}", range.start, range.end - 1))).await {
            // A range starting past the end is "not satisfiable": that is an empty read.
            Err(StoreError::Backend(e)) if e.source.to_string().contains("InvalidRange") => Ok(Bytes::new()),
            other => other,
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        check_prefix(prefix)?;
        let mut out = Vec::new();
        let mut pages =
            self.client.list_objects_v2().bucket(&self.bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| backend("list_objects_v2", DisplayErrorContext(e)))?;
            out.extend(page.contents().iter().filter_map(|o| {
                Some(ObjectInfo { key: o.key()?.to_owned(), size: o.size().unwrap_or(0).max(0) as u64 })
            }));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let objects = self.list(prefix).await?;
        for batch in objects.chunks(1000) {
            let ids = batch
                .iter()
                .map(|o| ObjectIdentifier::builder().key(&o.key).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| backend("delete_objects", e))?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| backend("delete_objects", e))?;
            self.client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| backend("delete_objects", DisplayErrorContext(e)))?;
        }
        Ok(objects.len() as u64)
    }

    /// A presigned GET (SigV4 in the query string, signed here without a network call). The object's
    /// stored headers come back with it: a chunk's `Content-Type: application/x-ndjson` and
    /// `Content-Encoding: gzip`. Signed with temporary credentials (a Lambda role), the URL stops
    /// working when they expire, if that is sooner than `expires`.
    async fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        check_key(key)?;
        let config = PresigningConfig::expires_in(expires).map_err(|e| backend("presign_get", e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| backend("presign_get", DisplayErrorContext(e)))?;
        Ok(Some(request.uri().to_owned()))
    }
}
