//! Admin subcommands: `validate` (every config problem, or "ok"), `doctor` (the config against
//! its AWS account, read-only), `spec-schema` and `gc`.

use std::path::Path;
use std::process::ExitCode;

use stages::config::ConfigError;
use tokio_util::sync::CancellationToken;

pub fn validate(config: &Path) -> ExitCode {
    match stages::config::load_file(config) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid { path, problems }) => {
            for p in &problems {
                println!("{}: {p}", path.display());
            }
            eprintln!("{} problem(s) in {}", problems.len(), path.display());
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("{e}");
            ExitCode::FAILURE
        }
    }
}

pub async fn doctor(config: &Path) -> ExitCode {
    // The AWS checks need a valid config; `validate` lists its problems.
    let cfg = match stages::config::load_file(config) {
        Ok(cfg) => {
            println!("ok   config: {} is valid", config.display());
            cfg
        }
        Err(e) => {
            println!("FAIL config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let checks = stages::doctor::run(&cfg, &mut |c| println!("{c}")).await;
    let failed = checks
        .iter()
        .filter(|c| c.status == stages::doctor::Status::Fail)
        .count();
    if stages::doctor::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} check(s) failed");
        ExitCode::FAILURE
    }
}

pub fn spec_schema() -> ExitCode {
    println!("{}", stages::settings::spec::json_schema());
    ExitCode::SUCCESS
}

pub async fn gc(
    config: &Path,
    dry_run: bool,
    older_than: &str,
    cancel: &CancellationToken,
) -> ExitCode {
    let cfg = match stages::config::load_file(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let older_than = match stages::duration::parse_duration(older_than) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("--older-than: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = stages::gc::GcOptions {
        dry_run,
        older_than,
    };
    match stages::gc::sweep(&cfg, opts, cancel).await {
        Ok(found) if found.is_empty() => {
            println!("nothing to release");
            ExitCode::SUCCESS
        }
        Ok(found) => {
            for row in stages::gc::table(&found) {
                println!("{row}");
            }
            if found.iter().any(|o| o.outcome.starts_with("failed")) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("gc: {e}");
            ExitCode::FAILURE
        }
    }
}
