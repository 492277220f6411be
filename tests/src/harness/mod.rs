//! The one end-to-end harness: every test that drives the real `sagemaker-executor` through
//! the runner emulator starts here.
//!
//! - [`ExecutorSetup`] ([`setup`]): a temp dir with the builds and cache roots, the executor
//!   config written from the one template ([`ExecutorSetup::config_text`] with [`POLICY`]),
//!   and runner configs calling the binary: with AWS pointed nowhere for the protocol tests,
//!   or at a simulator.
//! - [`World`] ([`world`]): an [`ExecutorSetup`] wired to a running AWS simulator, with SDK
//!   clients and the assertions the simulator-backed tests share.
//! - Here: what jobs and their checks share across the test files ([`ECR_IMAGE`],
//!   [`training_job_name`], [`line_index`], [`eventually`], [`assert_outcome`],
//!   [`assert_system_failure`]).

pub mod serving;
pub mod setup;
pub mod world;

use std::time::{Duration, Instant};

pub use serving::SERVE_IMAGE;
pub use setup::{BUCKET, ExecutorSetup, POLICY, REGION, TRAIN_ROLE};
pub use world::World;

use crate::runner::{JobOutcome, JobResult};

/// An image the `train` action accepts (an ECR image in the config's region).
pub const ECR_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1";

/// The deterministic training job name of a job's main script stage.
pub fn training_job_name(project_id: u64, job_id: u64) -> String {
    format!("gl-{project_id}-{job_id}")
}

/// The index of the line of `log` that equals `needle`; fails the test, showing the log, when
/// there is none.
#[track_caller]
pub fn line_index(log: &str, needle: &str) -> usize {
    log.lines()
        .position(|l| l == needle)
        .unwrap_or_else(|| panic!("{needle:?} missing in:\n{log}"))
}

/// Waits until `check` holds, or fails after `timeout` with `what`.
#[track_caller]
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Nothing pushes a change of AWS state to a test; a short poll against a deadline
        // is the wait.
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fails the test, showing the job log, unless the job ended with `expected`.
#[track_caller]
pub fn assert_outcome(result: &JobResult, expected: JobOutcome) {
    assert_eq!(result.outcome, expected, "{}", result.plain_log());
}

/// Fails the test, showing the job log, unless the job ended in a system failure whose log
/// contains `needle`.
#[track_caller]
pub fn assert_system_failure(result: &JobResult, needle: &str) {
    let log = result.plain_log();
    assert!(
        matches!(result.outcome, JobOutcome::SystemFailure { .. }),
        "{:?}\n{log}",
        result.outcome
    );
    assert!(log.contains(needle), "{needle:?} missing in:\n{log}");
}
