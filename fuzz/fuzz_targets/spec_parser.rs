//! `stages::settings::spec::parse` on arbitrary text: never panics, answers fast (the depth
//! guard and the parser's limits), and its error is one printable, bounded line; a spec that
//! parses is then resolved, and its refusals are bounded single lines too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match stages::settings::spec::parse(text) {
        Ok(spec) => {
            let cfg = sagemaker_executor_fuzz::config();
            let job = sagemaker_executor_fuzz::job(
                "image=123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1",
            );
            sagemaker_executor_fuzz::resolve_and_check(&job, Some(&spec), &cfg);
        }
        Err(e) => {
            assert!(
                !e.chars().any(char::is_control),
                "control character in {e:?}"
            );
            assert!(
                e.chars().count() <= 301,
                "{} characters: {e:?}",
                e.chars().count()
            );
        }
    }
});
