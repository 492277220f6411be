//! Test support for sagemaker-executor: a gitlab-runner emulator that drives the real binary
//! through the custom-executor protocol ([`runner`]), a `.gitlab-ci.yml` reader and pipeline
//! runner on top of it ([`pipeline`]), a launcher for the AWS simulator
//! ([`sim`]), the one end-to-end harness that wires the real executor into the emulator, with
//! AWS pointed nowhere or at the simulator ([`harness`]), a fake driver for the emulator's own
//! tests ([`fake_driver`]) and helpers that locate the workspace's binaries ([`paths`]).

pub mod error;
pub mod fake_driver;
pub mod harness;
pub mod paths;
pub mod pipeline;
pub mod runner;
pub mod sim;

pub use error::{Error, Result};
