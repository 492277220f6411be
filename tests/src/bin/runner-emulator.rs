//! `runner-emulator`: runs CI jobs through a custom executor the way gitlab-runner would,
//! printing each job log live. Used by the demo. Two modes:
//!
//! - job fixtures: each outcome is checked against the fixture's `expect:` (default:
//!   success); a fixture's `needs: [job]` hands it the dotenv variables of that earlier job.
//! - `--pipeline .gitlab-ci.yml`: the pipeline GitLab would create for `--source` and
//!   `--branch` ([`e2e::pipeline`]), run job by job; `--stop-environments` then stops the
//!   environments it deployed through their `on_stop` jobs (a merge request closing). It
//!   passes when every job that ran succeeded (or may fail) and, with `--expect-ran`, exactly
//!   those jobs ran.
//!
//! ```text
//! runner-emulator --executor target/debug/sagemaker-executor --executor-config executor.toml \
//!     [--builds-dir DIR] [--cache-dir DIR] [--work-dir DIR] [--env KEY=VALUE]... FIXTURE.yaml...
//! runner-emulator --executor ... --executor-config ... --pipeline .gitlab-ci.yml \
//!     --source push|merge_request_event --branch B [--merge-request-iid N] \
//!     [--project-path ns/name] [--runner-tag T]... [--stop-environments] [--expect-ran a,b,...]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use e2e::pipeline::{self, JobStatus, PipelineSource, PipelineSpec, RunOptions};
use e2e::runner::{Expectation, JobFixture, Project, Runner, RunnerConfig};

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
    #[arg(required_unless_present = "pipeline", conflicts_with = "pipeline")]
    fixtures: Vec<PathBuf>,
    /// Run this `.gitlab-ci.yml` (its directory is the repository) instead of fixtures.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// `CI_PIPELINE_SOURCE` of the pipeline.
    #[arg(long, default_value = "push", value_parser = ["push", "merge_request_event"])]
    source: String,
    /// The branch (a merge request's source branch).
    #[arg(long, default_value = "main")]
    branch: String,
    /// `CI_DEFAULT_BRANCH` (a merge request's target).
    #[arg(long, default_value = "main")]
    default_branch: String,
    /// `CI_MERGE_REQUEST_IID` of a merge request pipeline.
    #[arg(long, default_value_t = 1)]
    merge_request_iid: u64,
    /// `CI_PROJECT_PATH`.
    #[arg(long, default_value = "group/project")]
    project_path: String,
    /// `CI_PROJECT_ID`.
    #[arg(long, default_value_t = 1)]
    project_id: u64,
    /// The runner's tags (repeatable; default `sagemaker`).
    #[arg(long = "runner-tag")]
    runner_tags: Vec<String>,
    /// The runner also takes untagged jobs.
    #[arg(long)]
    run_untagged: bool,
    /// After the pipeline, stop the environments it deployed through their on_stop jobs.
    #[arg(long)]
    stop_environments: bool,
    /// Comma-separated jobs that must be exactly the ones that ran.
    #[arg(long, value_delimiter = ',')]
    expect_ran: Option<Vec<String>>,
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
    // sagemaker-executor's small run binary, when it sits beside the driver (as installed).
    let run_binary = executor.with_file_name("sagemaker-executor-run");
    if run_binary.is_file() {
        if let Some(config_exec) = config.config_exec.as_mut() {
            config_exec.exec.clone_from(&run_binary);
        }
        config.run_exec.exec = run_binary;
    }
    config.builds_dir = args.builds_dir.clone();
    config.cache_dir = args.cache_dir.clone();
    config.work_dir = args.work_dir.clone();
    config.graceful_kill_timeout = std::time::Duration::from_secs(args.graceful_kill_timeout);
    config.echo_log = true;
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| e2e::Error::Config(format!("--env {pair:?}: expected KEY=VALUE")))?;
        config.env.push((key.to_owned(), value.to_owned()));
    }
    if let Some(file) = &args.pipeline {
        return run_pipeline(&args, file, config);
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

fn run_pipeline(args: &Args, file: &std::path::Path, config: RunnerConfig) -> e2e::Result<bool> {
    let spec = PipelineSpec {
        file: file.to_path_buf(),
        source: PipelineSource::parse(&args.source).map_err(e2e::Error::Config)?,
        branch: args.branch.clone(),
        default_branch: args.default_branch.clone(),
        merge_request_iid: args.merge_request_iid,
        project: Project {
            path: args.project_path.clone(),
            id: args.project_id,
        },
        pipeline_id: None,
    };
    let mut options = RunOptions {
        run_untagged: args.run_untagged,
        stop_environments: args.stop_environments,
        ..RunOptions::default()
    };
    if !args.runner_tags.is_empty() {
        options.runner_tags = args.runner_tags.clone();
    }
    // Parse before starting anything: every unsupported keyword is reported up front.
    pipeline::load(file)?;
    let runner = Runner::new(config)?;
    println!(
        "=== pipeline {} ({} on {}) ===",
        file.display(),
        spec.source.as_str(),
        spec.branch
    );
    let run = pipeline::run(&runner, &spec, &options)?;
    let mut lines = run.summary();
    let mut ok = run.passed();
    if let Some(expected) = &args.expect_ran {
        let ran = run.ran();
        let same =
            ran.len() == expected.len() && expected.iter().all(|e| ran.contains(&e.as_str()));
        lines.push(format!(
            "{} jobs that ran: [{}] (expected [{}])",
            if same { "PASS" } else { "FAIL" },
            ran.join(", "),
            expected.join(", ")
        ));
        ok &= same;
    }
    for j in run
        .jobs
        .iter()
        .filter(|j| matches!(j.status, JobStatus::Failed { allowed: false, .. }))
    {
        if let Some(result) = &j.result {
            println!("\n--- runner log of {} ---\n{}", j.name, result.runner_log);
        }
    }
    println!("\n=== summary ===");
    for line in &lines {
        println!("{line}");
    }
    Ok(ok)
}
