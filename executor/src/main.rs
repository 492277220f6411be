//! The `sagemaker-executor` binary: everything lives in the library, so this stays a call.

fn main() -> std::process::ExitCode {
    executor::main_impl()
}
