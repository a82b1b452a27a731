//! AWS SDK clients configured for AWS or for an emulator (`AWS_ENDPOINT_URL`).

use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;

/// Loads the shared SDK configuration: region from the environment (us-east-1 if none), credentials
/// from the default chain, and the endpoint override when `endpoint` is given.
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let region = RegionProviderChain::default_provider().or_else("us-east-1");
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
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
