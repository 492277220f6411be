//! Test support for sagemaker-executor: a gitlab-runner emulator that drives the real binary
//! through the custom-executor protocol ([`runner`]), a launcher for the AWS simulator
//! ([`sim`]), the real executor wired into the emulator ([`executor`]), a fake driver for the
//! emulator's own tests ([`fake_driver`]) and helpers that locate the workspace's binaries
//! ([`paths`]).

pub mod error;
pub mod executor;
pub mod fake_driver;
pub mod paths;
pub mod runner;
pub mod sim;

pub use error::{Error, Result};
