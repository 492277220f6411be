//! Every partition works: a runner configured for a GovCloud region runs a training job on the
//! simulator with GovCloud's image host and role ARN shapes, and its links go to GovCloud's
//! console.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use e2e::harness::{POLICY, World, assert_outcome};
use e2e::runner::JobOutcome;

const GOV_IMAGE: &str = "123456789012.dkr.ecr.us-gov-west-1.amazonaws.com/ml/train:1";

#[test]
fn a_govcloud_runner_trains_and_links_the_govcloud_console() {
    let w = World::new(POLICY);
    let config = w
        .config_text(POLICY)
        .replace("region = \"us-east-1\"", "region = \"us-gov-west-1\"")
        .replace("arn:aws:iam::", "arn:aws-us-gov:iam::");
    assert!(config.contains("us-gov-west-1"), "{config}");
    w.write_config(&config).unwrap();
    let fixture = w.fixture(&format!(
        "name: train\nimage: {GOV_IMAGE}\nscript:\n  - echo trained in the GovCloud partition\nsource:\n  README.md: \"model repo\\n\"\nartifacts:\n  reports: {{dotenv: sagemaker.env}}\n"
    ));
    let result = w.runner.run(&fixture).unwrap();
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    assert!(log.contains("trained in the GovCloud partition"), "{log}");
    assert!(
        log.contains("Console: https://console.amazonaws-us-gov.com/sagemaker/home?region=us-gov-west-1#/jobs/"),
        "{log}"
    );
    assert!(
        result
            .dotenv_value("SAGEMAKER_TRAINING_JOB_ARN")
            .is_some_and(|arn| arn.contains(":us-gov-west-1:")),
        "{:?}",
        result.dotenv()
    );
}
