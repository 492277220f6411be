//! `stages::settings::resolve` for a job with arbitrary variables (see
//! `sagemaker_executor_fuzz::job` for the input format) against a fixed config: never panics,
//! and every refusal is one printable, bounded line.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use stages::config::ExecutorConfig;

static CONFIG: LazyLock<ExecutorConfig> = LazyLock::new(sagemaker_executor_fuzz::config);

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let job = sagemaker_executor_fuzz::job(&text);
    sagemaker_executor_fuzz::resolve_and_check(&job, None, &CONFIG);
});
