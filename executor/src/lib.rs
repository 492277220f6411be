//! The GitLab custom-executor adapter: the four protocol stages (`config`, `prepare`, `run`,
//! `cleanup`), the job context read from the runner, exit codes, signals, and the admin
//! subcommands. The AWS work itself lives in the `stages` crate, which knows nothing of this
//! protocol.

mod cli;
mod context;
mod error;
mod exit;
mod local;
mod signals;
mod stage;

use std::process::ExitCode;

use clap::Parser;

pub use error::ExecutorError;

/// The full binary next to the `run` binary.
pub const FULL_BINARY: &str = "sagemaker-executor";

/// Parses the command line, runs the stage and returns the exit code the runner expects.
pub fn main_impl() -> ExitCode {
    let cli = cli::Cli::parse();
    let codes = exit::ExitCodes::from_env();
    if let Some(code) = stage::on_host(&cli, codes) {
        return code;
    }
    match runtime(codes) {
        Ok(rt) => rt.block_on(stage::dispatch(cli, codes)),
        Err(code) => code,
    }
}

/// `sagemaker-executor-run`, the runner's `run_exec` and `config_exec`: most of a job's stages
/// run on the runner host (`config`, `get_sources`, caches, artifacts, `after_script`), and
/// each pays for loading the binary that runs it. This small one runs those itself, without an
/// async runtime, and replaces itself (exec, same process) with the full binary beside it for
/// every other command and for the stages that go to AWS, so `run_args` and behaviour are those
/// of the full binary.
pub fn run_main() -> ExitCode {
    let cli = cli::Cli::parse();
    let codes = exit::ExitCodes::from_env();
    if let Some(code) = stage::on_host(&cli, codes) {
        return code;
    }
    let full = std::env::current_exe().map(|exe| exe.with_file_name(FULL_BINARY));
    let error = match &full {
        Ok(path) => {
            use std::os::unix::process::CommandExt as _;
            std::process::Command::new(path)
                .args(std::env::args_os().skip(1))
                .exec()
        }
        Err(e) => std::io::Error::new(e.kind(), e.to_string()),
    };
    let shown = full.map_or_else(|_| FULL_BINARY.into(), |p| p.display().to_string());
    eprintln!("ERROR: cannot run {shown}: {error}");
    ExitCode::from(codes.system)
}

fn runtime(codes: exit::ExitCodes) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            ExitCode::from(codes.system)
        })
}
