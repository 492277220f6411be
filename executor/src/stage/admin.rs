//! Admin subcommands: `validate` (every config problem, or "ok") and `spec-schema`.

use std::path::Path;
use std::process::ExitCode;

use stages::config::ConfigError;

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

pub fn spec_schema() -> ExitCode {
    println!("{}", stages::settings::spec::json_schema());
    ExitCode::SUCCESS
}
