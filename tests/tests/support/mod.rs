//! The end-to-end harness for the test files that declare `mod support;`: it lives in the
//! library ([`e2e::harness`]); this module only re-exports it.

#![allow(
    unused_imports,
    reason = "each test binary that declares `mod support;` uses a different part of it"
)]

pub use e2e::harness::{BUCKET, ECR_IMAGE, POLICY, World, line_index, training_job_name};
