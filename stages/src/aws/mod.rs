//! One place that builds the AWS SDK configuration and every client from it, once per job:
//! region from the executor config, endpoints from the standard `AWS_ENDPOINT_URL*` settings (so
//! tests reach the simulator with no special code path), the SDK's standard retry mode for
//! single calls, explicit timeouts, and an optional assumed role. Credentials come from
//! refreshing providers, so waits longer than a session's lifetime keep working. The Fargate
//! helper containers build their S3 client through the same [`loader`].

pub mod credentials;
pub mod errors;
#[cfg(test)]
pub mod mock;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};

use crate::config::ExecutorConfig;

/// The clients a job needs, built once per process from one [`SdkConfig`].
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
    /// SageMaker Runtime (InvokeEndpoint).
    pub runtime: aws_sdk_sagemakerruntime::Client,
    /// SQS (the state-change queue of `[watch] queue_url`).
    pub sqs: aws_sdk_sqs::Client,
    /// The same clients with the SDK's retries off, for status calls in wait loops: those back
    /// off per operation themselves, so one throttled call never holds a loop for the SDK's
    /// backoff. (Log reads run in their own feed task and keep the retrying client.)
    pub polling: Polling,
    /// The region, for console links.
    pub region: String,
}

/// Clients without SDK retries (see [`Aws::polling`]).
#[derive(Debug, Clone)]
pub struct Polling {
    /// SageMaker.
    pub sagemaker: aws_sdk_sagemaker::Client,
    /// CloudWatch Logs.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// ECS.
    pub ecs: aws_sdk_ecs::Client,
}

/// The standard retry policy: exponential backoff with jitter on throttling and transient
/// faults. Adaptive mode's client-side rate limiter was measured to stall a low-traffic waiter
/// for minutes after a few throttles, so waits pace themselves instead.
fn standard_retry(max_attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(20))
}

/// The config loader every client of this executor starts from: `region` (else the
/// environment's), standard retries, explicit timeouts.
pub fn loader(region: Option<&str>, max_attempts: u32) -> ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(standard_retry(max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_owned()));
    }
    loader
}

/// Loads the shared SDK config for `cfg`, assuming `[aws] assume_role_arn` when set.
pub async fn sdk_config(cfg: &ExecutorConfig) -> SdkConfig {
    let sdk = loader(Some(&cfg.region), cfg.aws.max_attempts).load().await;
    match &cfg.aws.assume_role_arn {
        None => sdk,
        Some(role) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("sagemaker-executor")
                .configure(&sdk)
                .build()
                .await;
            loader(Some(&cfg.region), cfg.aws.max_attempts)
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .load()
                .await
        }
    }
}

/// The SDK config for one job's calls: the runner's ([`sdk_config`]), or a role session opened
/// with the job's GitLab ID token and refreshed by the SDK before it ends.
pub async fn job_sdk_config(
    cfg: &ExecutorConfig,
    creds: &credentials::JobCredentials,
) -> SdkConfig {
    let runner = sdk_config(cfg).await;
    match creds {
        credentials::JobCredentials::Runner => runner,
        credentials::JobCredentials::Role(session) => {
            let provider = credentials::WebIdentityProvider::new(&runner, session.clone());
            loader(Some(&cfg.region), cfg.aws.max_attempts)
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .load()
                .await
        }
    }
}

/// An S3 client from `sdk`, with path-style addressing when asked.
pub fn s3_client(sdk: &SdkConfig, path_style: bool) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(path_style)
            .build(),
    )
}

/// A CloudWatch Logs client from `sdk` that reaches a custom endpoint for Live Tail too.
pub fn logs_client(sdk: &SdkConfig) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::config::Builder::from(sdk)
            .interceptor(NoHostPrefixOnCustomEndpoint)
            .build(),
    )
}

/// Takes the host prefix (`stream-`) off StartLiveTail requests to a custom endpoint.
///
/// AWS serves StartLiveTail on a host-prefixed endpoint, and the SDK prepends the prefix to
/// whatever endpoint it resolved, a custom one (`AWS_ENDPOINT_URL*`: a VPC endpoint, a proxy,
/// the simulator) included, where `stream-127.0.0.1` or `stream-vpce-...` does not resolve.
/// aws-sdk-cloudwatchlogs 1.162 has no switch to leave the prefix off (smithy-rs applies any
/// `EndpointPrefix` in the config bag unconditionally), so this interceptor takes it off again
/// before signing, and only when a custom endpoint is configured: the standard AWS endpoints
/// keep the prefix they need.
#[derive(Debug)]
struct NoHostPrefixOnCustomEndpoint;

impl aws_smithy_runtime_api::client::interceptors::Intercept for NoHostPrefixOnCustomEndpoint {
    fn name(&self) -> &'static str {
        "NoHostPrefixOnCustomEndpoint"
    }

    fn modify_before_signing(
        &self,
        context: &mut aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut<'_>,
        _components: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let Some(custom) = cfg.load::<aws_types::endpoint_config::EndpointUrl>() else {
            return Ok(());
        };
        let Some(prefix) = cfg.load::<aws_smithy_runtime_api::client::endpoint::EndpointPrefix>()
        else {
            return Ok(());
        };
        if let Some(uri) = strip_host_prefix(context.request().uri(), prefix.as_str(), &custom.0) {
            context.request_mut().set_uri(uri.as_str())?;
        }
        Ok(())
    }
}

/// `uri` without `prefix` at the start of its host, unless the custom endpoint's host starts
/// with it too (then the prefix is the endpoint's own).
fn strip_host_prefix(uri: &str, prefix: &str, custom: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let unprefixed = rest.strip_prefix(prefix)?;
    let custom_host = custom.split_once("://").map_or(custom, |(_, r)| r);
    if prefix.is_empty() || custom_host.starts_with(prefix) {
        return None;
    }
    Some(format!("{scheme}://{unprefixed}"))
}

impl Aws {
    /// Builds every client from one SDK config, with `creds`.
    pub async fn connect(cfg: &ExecutorConfig, creds: &credentials::JobCredentials) -> Aws {
        Aws::from_sdk(
            &job_sdk_config(cfg, creds).await,
            cfg.aws.s3_force_path_style,
            &cfg.region,
        )
    }

    /// Builds every client from `sdk`.
    pub fn from_sdk(sdk: &SdkConfig, path_style: bool, region: &str) -> Aws {
        let once = sdk
            .to_builder()
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .build();
        Aws {
            sagemaker: aws_sdk_sagemaker::Client::new(sdk),
            s3: s3_client(sdk, path_style),
            logs: logs_client(sdk),
            ecs: aws_sdk_ecs::Client::new(sdk),
            runtime: aws_sdk_sagemakerruntime::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            polling: Polling {
                sagemaker: aws_sdk_sagemaker::Client::new(&once),
                logs: aws_sdk_cloudwatchlogs::Client::new(&once),
                ecs: aws_sdk_ecs::Client::new(&once),
            },
            region: region.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_tail_prefix_comes_off_a_custom_endpoint_only() {
        assert_eq!(
            strip_host_prefix(
                "http://stream-127.0.0.1:5000/",
                "stream-",
                "http://127.0.0.1:5000"
            )
            .as_deref(),
            Some("http://127.0.0.1:5000/")
        );
        // An endpoint whose own host starts with the prefix keeps it.
        assert_eq!(
            strip_host_prefix(
                "https://stream-logs.example/",
                "stream-",
                "https://stream-logs.example"
            ),
            None
        );
        assert_eq!(
            strip_host_prefix("https://logs.example/", "stream-", "https://logs.example"),
            None
        );
    }
}
