//! The `sagemaker-executor-run` binary: the runner's `config_exec` and `run_exec`; see
//! [`executor::run_main`].

fn main() -> std::process::ExitCode {
    executor::run_main()
}
