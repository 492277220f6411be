//! Test support: one mock-client builder per service, answered by aws-smithy-mocks rules, with
//! SDK retries off so one call is one rule, and a call nobody expected fails the test.

use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode};

/// Builds `fn $name(mode, rules) -> $krate::Client`.
macro_rules! mock_client {
    ($name:ident, $krate:ident) => {
        /// A client whose calls are answered by `rules` in `mode`.
        pub fn $name(mode: RuleMode, rules: &[&Rule]) -> $krate::Client {
            let mut interceptor = MockResponseInterceptor::new().rule_mode(mode);
            for rule in rules {
                interceptor = interceptor.with_rule(rule);
            }
            let config = $krate::Config::builder()
                .behavior_version($krate::config::BehaviorVersion::latest())
                .region($krate::config::Region::new("us-east-1"))
                .credentials_provider($krate::config::Credentials::new(
                    "AKIDTEST", "test", None, None, "test",
                ))
                .retry_config($krate::config::retry::RetryConfig::disabled())
                .http_client(aws_smithy_mocks::create_mock_http_client())
                .interceptor(interceptor)
                .build();
            $krate::Client::from_conf(config)
        }
    };
}

mock_client!(ecs, aws_sdk_ecs);
mock_client!(s3, aws_sdk_s3);
mock_client!(logs, aws_sdk_cloudwatchlogs);
mock_client!(sagemaker, aws_sdk_sagemaker);
mock_client!(sqs, aws_sdk_sqs);
mock_client!(sts, aws_sdk_sts);
