//! `stages::outputs::render_dotenv` on arbitrary pairs (one `key<TAB>value` per line): the
//! text always satisfies GitLab's dotenv rules, and every pair is either written or reported
//! as left out.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let pairs = sagemaker_executor_fuzz::pairs(&text);
    let (out, dropped) = stages::outputs::render_dotenv(&pairs);
    sagemaker_executor_fuzz::check_dotenv(&out);
    assert_eq!(out.lines().count() + dropped.len(), pairs.len());
});
