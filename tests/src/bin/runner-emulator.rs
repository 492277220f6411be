//! `runner-emulator`: runs job fixtures through a custom executor the way gitlab-runner
//! would, printing each job log live, and checks each outcome against the fixture's
//! `expect:` (default: success). A fixture's `needs: [job]` hands it the dotenv variables of
//! that earlier job, as GitLab does. Used by the demo.
//!
//! ```text
//! runner-emulator --executor target/debug/sagemaker-executor --executor-config executor.toml \
//!     [--builds-dir DIR] [--cache-dir DIR] [--work-dir DIR] [--env KEY=VALUE]... FIXTURE.yaml...
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use e2e::runner::{Expectation, JobFixture, Runner, RunnerConfig};

#[derive(Debug, Parser)]
#[command(about = "Run GitLab job fixtures through a custom executor like gitlab-runner does")]
struct Args {
    /// The custom executor binary (config_exec = prepare_exec = run_exec = cleanup_exec).
    #[arg(long)]
    executor: PathBuf,
    /// The executor's config file, passed as `--config <file>` before the stage argument.
    #[arg(long)]
    executor_config: PathBuf,
    /// `[[runners]] builds_dir`, used if the executor's config stage returns none.
    #[arg(long)]
    builds_dir: Option<PathBuf>,
    /// `[[runners]] cache_dir`, used if the executor's config stage returns none.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep fixture repositories and uploaded artifacts here (default: a temp dir).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL on cancel or timeout.
    #[arg(long, default_value_t = 600)]
    graceful_kill_timeout: u64,
    /// Extra environment for every executor call.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Job fixtures, run in order.
    #[arg(required = true)]
    fixtures: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("runner-emulator: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> e2e::Result<bool> {
    let config_path = std::fs::canonicalize(&args.executor_config)
        .map_err(|e| e2e::Error::Config(format!("{}: {e}", args.executor_config.display())))?;
    let config_arg = config_path.to_string_lossy().into_owned();
    // Every call runs in the job's temp dir, so a relative executor path would not resolve.
    let executor = std::fs::canonicalize(&args.executor)
        .map_err(|e| e2e::Error::Config(format!("{}: {e}", args.executor.display())))?;
    let mut config = RunnerConfig::for_driver(&executor, &["--config", &config_arg]);
    config.builds_dir = args.builds_dir;
    config.cache_dir = args.cache_dir;
    config.work_dir = args.work_dir;
    config.graceful_kill_timeout = std::time::Duration::from_secs(args.graceful_kill_timeout);
    config.echo_log = true;
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| e2e::Error::Config(format!("--env {pair:?}: expected KEY=VALUE")))?;
        config.env.push((key.to_owned(), value.to_owned()));
    }
    // Load every fixture first: a typo in the last one should not cost a full run.
    let fixtures = args
        .fixtures
        .iter()
        .map(|path| JobFixture::load(path).map(|f| (path.clone(), f)))
        .collect::<e2e::Result<Vec<_>>>()?;
    let runner = Runner::new(config)?;
    let mut summary = Vec::new();
    let mut dotenvs: std::collections::HashMap<String, Vec<(String, String)>> =
        std::collections::HashMap::new();
    for (path, fixture) in &fixtures {
        println!("\n=== job {} ({}) ===", fixture.name, path.display());
        let mut fixture = fixture.clone();
        for needed in fixture.needs.clone() {
            let Some(vars) = dotenvs.get(&needed) else {
                return Err(e2e::Error::Config(format!(
                    "{}: needs {needed:?}, which has not run or left no dotenv report",
                    fixture.name
                )));
            };
            for (k, v) in vars {
                fixture.set_variable(k, v);
            }
        }
        let result = runner.run(&fixture)?;
        if let Some(vars) = result.dotenv() {
            dotenvs.insert(fixture.name.clone(), vars);
        }
        let expected = fixture.expect.unwrap_or(Expectation::Success);
        let ok = expected.matches(&result.outcome);
        summary.push(format!(
            "{} {}: {} (expected {expected})",
            if ok { "PASS" } else { "FAIL" },
            fixture.name,
            result.outcome,
        ));
        if !ok {
            println!(
                "\n--- runner log of {} ---\n{}",
                fixture.name, result.runner_log
            );
        }
    }
    println!("\n=== summary ===");
    for line in &summary {
        println!("{line}");
    }
    Ok(summary.iter().all(|l| l.starts_with("PASS")))
}
