//! AWS SDK clients configured for AWS or for an emulator (`AWS_ENDPOINT_URL`).

use aws_config::meta::region::RegionProviderChain;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use trace_core::BackendTimeouts;

/// Loads the shared SDK configuration: region from the environment (us-east-1 if none), credentials
/// from the default chain, and the endpoint override when `endpoint` is given; the default timeouts.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    sdk_config_with(endpoint, &BackendTimeouts::default()).await
}

/// [`sdk_config`] with `timeouts`: a connection must open within `connect`, one attempt of a call
/// (headers of a GET included, not the reading of its body) end within `aws_attempt`; the SDK's
/// standard retries (3 attempts, exponential back-off with jitter) come on top.
pub async fn sdk_config_with(endpoint: Option<&str>, timeouts: &BackendTimeouts) -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    let timeout_config = TimeoutConfig::builder()
        .connect_timeout(timeouts.connect)
        .operation_attempt_timeout(timeouts.aws_attempt)
        .build();
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(region).timeout_config(timeout_config);
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// An SQS client.
pub fn sqs_client(config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(config)
}

/// An S3 client; path-style addressing when an endpoint override is set (emulators do not resolve
/// bucket sub-domains).
pub fn s3_client(config: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let path_style = config.endpoint_url().is_some();
    let s3 = aws_sdk_s3::config::Builder::from(config).force_path_style(path_style).build();
    aws_sdk_s3::Client::from_conf(s3)
}
