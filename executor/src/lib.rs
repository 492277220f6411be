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

/// Parses the command line, runs the stage and returns the exit code the runner expects.
pub fn main_impl() -> ExitCode {
    let cli = cli::Cli::parse();
    let codes = exit::ExitCodes::from_env();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return ExitCode::from(codes.system);
        }
    };
    runtime.block_on(stage::dispatch(cli, codes))
}
