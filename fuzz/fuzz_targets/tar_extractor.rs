//! `stages::workspace::extract_tar` on arbitrary bytes into a fixed sandbox (see
//! `sagemaker_executor_fuzz::TarSandbox`): never panics, never writes outside the allowed
//! roots, never leaves a link there that resolves out, and stops at its limits.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stages::workspace::{ExtractLimits, extract_tar};

fuzz_target!(|data: &[u8]| {
    let sandbox = sagemaker_executor_fuzz::TarSandbox::fresh();
    let limits = ExtractLimits {
        max_bytes: 1 << 20,
        max_entries: 200,
    };
    if let Ok(summary) = extract_tar(data, &sandbox.roots, &limits) {
        assert!(summary.bytes <= limits.max_bytes);
        assert!(summary.files <= limits.max_entries);
    }
    sandbox.check();
});
