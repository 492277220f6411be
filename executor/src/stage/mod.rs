//! One module per protocol stage; this file routes the command line to them and turns their
//! result into the exit code and `BUILD_EXIT_CODE_FILE` the runner expects.

mod admin;
mod cleanup;
mod config;
mod prepare;
pub(crate) mod run;
mod watch_host;
mod workspace;

use std::process::ExitCode;

use stages::failure::{Classify, FailureKind};

use crate::cli::{Cli, Command};
use crate::error::ExecutorError;
use crate::exit::{BuildExitCodeFile, ExitCodes};
use crate::signals;

/// Runs the command and maps its outcome to an exit code.
pub async fn dispatch(cli: Cli, codes: ExitCodes) -> ExitCode {
    let cancel = signals::install(codes.system);
    match cli.command {
        Command::Config => report(config::run(&cli.config), codes, None),
        Command::Prepare => report(prepare::run(&cli.config).await, codes, None),
        Command::Run { script, stage } => {
            let file = BuildExitCodeFile::from_env();
            let result = run::run(&cli.config, &script, &stage, codes, &cancel).await;
            report(result, codes, Some(&file))
        }
        Command::Cleanup => {
            // Cleanup's result never changes the job's status; a failure is only logged.
            if let Err(e) = cleanup::run(&cli.config, &cancel).await {
                eprintln!("WARNING: cleanup: {e}");
                return ExitCode::from(codes.system);
            }
            ExitCode::SUCCESS
        }
        Command::Validate => admin::validate(&cli.config),
        Command::Doctor => admin::doctor(&cli.config).await,
        Command::SpecSchema => admin::spec_schema(),
        Command::Gc {
            dry_run,
            older_than,
        } => admin::gc(&cli.config, dry_run, &older_than, &cancel).await,
        Command::Workspace(op) => workspace::run(op, &cancel).await,
        Command::WatchHost => watch_host::run(&cli.config, &cancel).await,
    }
}

/// The commands that run on the runner host alone (`config`, and `run` of a stage that is not
/// the job's script), without an async runtime: both binaries answer them this way, and the
/// small `sagemaker-executor-run` links nothing else. `None` for every other command.
pub fn on_host(cli: &Cli, codes: ExitCodes) -> Option<ExitCode> {
    match &cli.command {
        Command::Config => Some(report(config::run(&cli.config), codes, None)),
        Command::Run { script, stage } if !run::is_user_script(stage) => {
            let file = BuildExitCodeFile::from_env();
            let result = run::run_local(&cli.config, script, codes.system);
            Some(report(result, codes, Some(&file)))
        }
        _ => None,
    }
}

/// Prints the error (one line per problem) and picks the exit code.
fn report(
    result: Result<(), ExecutorError>,
    codes: ExitCodes,
    file: Option<&BuildExitCodeFile>,
) -> ExitCode {
    let err = match result {
        Ok(()) => {
            if let Some(f) = file {
                f.write(0);
            }
            return ExitCode::SUCCESS;
        }
        Err(e) => e,
    };
    match &err {
        ExecutorError::Rejected(problems) => {
            for p in problems {
                eprintln!("\x1b[31;1mERROR: {p}\x1b[0;m");
            }
        }
        // A script's own failure already spoke in its output.
        ExecutorError::Script(_) => {}
        // Errors of staging and restoring name S3 keys; the job log gets no run's random
        // staging component (see `stages::workspace::StagingLocation`).
        other => eprintln!(
            "\x1b[31;1mERROR: {}\x1b[0;m",
            stages::workspace::redact(&chain(other))
        ),
    }
    let kind = err.failure_kind();
    if let Some(f) = file {
        match kind {
            FailureKind::Build => f.write(err.script_exit_code().unwrap_or(1)),
            FailureKind::System => f.clear(),
        }
    }
    ExitCode::from(codes.for_kind(kind))
}

/// The error and its sources on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
