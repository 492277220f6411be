//! One place that builds the AWS SDK configuration: region from the executor config, endpoints
//! from the standard `AWS_ENDPOINT_URL*` settings (so tests reach the simulator with no special
//! code path), the SDK's adaptive retry mode as the single retry layer for throttling, explicit
//! timeouts, and an optional assumed role. Credentials come from refreshing providers, so waits
//! longer than a session's lifetime keep working.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::config::ExecutorConfig;

pub mod errors;

/// The clients a job needs, built once per process.
#[derive(Debug, Clone)]
pub struct Aws {
    /// SageMaker.
    pub sagemaker: aws_sdk_sagemaker::Client,
    /// S3.
    pub s3: aws_sdk_s3::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
    /// The region, for console links.
    pub region: String,
}

/// Loads the shared SDK config for `cfg`.
pub async fn sdk_config(cfg: &ExecutorConfig) -> SdkConfig {
    let loader = || {
        aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            // Standard mode: exponential backoff with jitter on throttling and transient faults.
            // Adaptive mode's client-side rate limiter was measured to stall a low-traffic waiter
            // for minutes after a few throttles, so the poll loop's own pacing is used instead.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(cfg.aws.max_attempts)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            )
    };
    let sdk = loader().load().await;
    match &cfg.aws.assume_role_arn {
        None => sdk,
        Some(role) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("sagemaker-executor")
                .configure(&sdk)
                .build()
                .await;
            loader()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .load()
                .await
        }
    }
}

impl Aws {
    /// Builds every client from one SDK config.
    pub async fn connect(cfg: &ExecutorConfig) -> Aws {
        let sdk = sdk_config(cfg).await;
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.aws.s3_force_path_style)
            .build();
        Aws {
            sagemaker: aws_sdk_sagemaker::Client::new(&sdk),
            s3: aws_sdk_s3::Client::from_conf(s3),
            logs: aws_sdk_cloudwatchlogs::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            region: cfg.region.clone(),
        }
    }
}
