//! Runs a pipeline the way GitLab schedules it, one job at a time through the runner
//! emulator: the repository committed once (every job checks out the same commit), jobs in
//! stage and `needs` order, `when` and failure gating (a failed job stops later `on_success`
//! jobs unless they only need jobs that succeeded; a manual rule job blocks later stages),
//! runner tags, variables expanded like the GitLab server does before the job is sent
//! (predefined, global, job, rule and upstream dotenv variables), artifacts and dotenv
//! reports handed to the jobs that `needs`/`dependencies` name (or to every later stage), and
//! environments: deployed by a job's `environment`, stopped by the `on_stop` job when asked
//! to stop them (as when a merge request is closed).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;

use super::expand::{Var, expand_nested, expand_server};
use super::parse::{EnvironmentAction, Pipeline, When, parse};
use super::plan::{Context, MergeRequest, PipelineSource, Plan, PlannedJob, plan};
use crate::error::{Error, Result};
use crate::runner::{
    Dependency, Hooks, JobFixture, JobOutcome, JobResult, Project, Runner, Source, Variable,
    ref_slug,
};

/// Which pipeline to run.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The `.gitlab-ci.yml`; its directory is the repository's content.
    pub file: PathBuf,
    /// `CI_PIPELINE_SOURCE`.
    pub source: PipelineSource,
    /// The branch (the source branch of a merge request).
    pub branch: String,
    /// `CI_DEFAULT_BRANCH`, also a merge request's target branch.
    pub default_branch: String,
    /// `CI_MERGE_REQUEST_IID` of a merge request pipeline.
    pub merge_request_iid: u64,
    /// The GitLab project.
    pub project: Project,
    /// `CI_PIPELINE_ID`; `None` picks one.
    pub pipeline_id: Option<u64>,
}

/// How the emulated runner picks jobs, and what happens after the pipeline.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The runner's tags: a job runs only if it has all of its tags.
    pub runner_tags: Vec<String>,
    /// The runner also takes jobs without tags.
    pub run_untagged: bool,
    /// After the pipeline, stop every environment it deployed that has an `on_stop` job, by
    /// running that job (as GitLab does when a merge request is closed or merged).
    pub stop_environments: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            runner_tags: vec!["sagemaker".to_owned()],
            run_untagged: false,
            stop_environments: false,
        }
    }
}

/// What happened to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobStatus {
    /// Ran and succeeded.
    Success,
    /// Ran and failed (`outcome` as the runner reported it).
    Failed {
        /// The outcome, e.g. "failed with exit code 3".
        outcome: String,
        /// `allow_failure` covers it.
        allowed: bool,
    },
    /// Not run, because of what happened before it.
    Skipped(String),
    /// A manual job nobody started.
    Manual,
    /// No runner would take it.
    Stuck(String),
}

/// Why a job ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The pipeline ran it.
    Pipeline,
    /// It is the `on_stop` job of this environment, which was stopped.
    EnvironmentStop(String),
}

/// One job of the run.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The job name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Why it ran (or was considered).
    pub trigger: Trigger,
    /// What happened.
    pub status: JobStatus,
    /// The user variables sent with it, after the server's expansion (upstream dotenv
    /// variables included).
    pub variables: Vec<(String, String)>,
    /// The runner's result, if it ran.
    pub result: Option<JobResult>,
}

impl JobRecord {
    /// The value of a variable the job was sent.
    pub fn variable(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn passed(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Success | JobStatus::Failed { allowed: true, .. }
        )
    }
}

/// An environment the pipeline deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    /// `environment:name`, expanded.
    pub name: String,
    /// `environment:url`, expanded with the deploying job's own dotenv variables.
    pub url: Option<String>,
    /// The job that deployed it.
    pub deployed_by: String,
    /// Its `on_stop` job.
    pub on_stop: Option<String>,
    /// The job that stopped it.
    pub stopped_by: Option<String>,
}

/// A finished pipeline run.
#[derive(Debug)]
pub struct PipelineRun {
    /// What GitLab knew when creating the pipeline.
    pub context: Context,
    /// The pipeline GitLab created.
    pub plan: Plan,
    /// Every job considered, in the order they were.
    pub jobs: Vec<JobRecord>,
    /// Environments deployed.
    pub environments: Vec<EnvironmentRecord>,
    stop_requested: bool,
    // The committed repository the jobs cloned; kept for the run's lifetime.
    _repo: tempfile::TempDir,
}

impl PipelineRun {
    /// The last record of job `name`.
    pub fn job(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.iter().rev().find(|j| j.name == name)
    }

    /// The jobs that ran, in order.
    pub fn ran(&self) -> Vec<&str> {
        self.jobs
            .iter()
            .filter(|j| j.result.is_some())
            .map(|j| j.name.as_str())
            .collect()
    }

    /// Whether the pipeline succeeded: every job that ran passed (or may fail), none is
    /// stuck, and every environment asked to stop was stopped.
    pub fn passed(&self) -> bool {
        self.plan.not_created.is_none()
            && self.jobs.iter().all(|j| {
                !matches!(
                    j.status,
                    JobStatus::Failed { allowed: false, .. } | JobStatus::Stuck(_)
                )
            })
            && (!self.stop_requested
                || self
                    .environments
                    .iter()
                    .all(|e| e.on_stop.is_none() || e.stopped_by.is_some()))
    }

    /// One line per job and environment: `PASS`, `FAIL`, `SKIP` or `MANUAL`, the name and
    /// what happened.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(why) = &self.plan.not_created {
            lines.push(format!("FAIL pipeline not created: {why}"));
        }
        for j in &self.jobs {
            let context = match &j.trigger {
                Trigger::Pipeline => j.stage.clone(),
                Trigger::EnvironmentStop(env) => format!("{}, stops environment {env}", j.stage),
            };
            let (word, what) = match &j.status {
                JobStatus::Success => ("PASS", "success".to_owned()),
                JobStatus::Failed {
                    outcome,
                    allowed: true,
                } => ("PASS", format!("{outcome} (allowed to fail)")),
                JobStatus::Failed { outcome, .. } => ("FAIL", outcome.clone()),
                JobStatus::Skipped(why) => ("SKIP", format!("skipped: {why}")),
                JobStatus::Manual => ("MANUAL", "manual job, not started".to_owned()),
                JobStatus::Stuck(why) => ("FAIL", format!("stuck: {why}")),
            };
            lines.push(format!("{word} {} ({context}): {what}", j.name));
        }
        for (name, why) in &self.plan.excluded {
            lines.push(format!("SKIP {name}: not in this pipeline ({why})"));
        }
        for e in &self.environments {
            let url = e
                .url
                .as_deref()
                .filter(|u| !u.is_empty())
                .unwrap_or("no url");
            match (&e.stopped_by, &e.on_stop) {
                (Some(by), _) => lines.push(format!(
                    "PASS environment {}: deployed by {} ({url}), stopped by {by}",
                    e.name, e.deployed_by
                )),
                (None, Some(stop)) if self.stop_requested => lines.push(format!(
                    "FAIL environment {}: deployed by {} ({url}), not stopped by {stop}",
                    e.name, e.deployed_by
                )),
                (None, _) => lines.push(format!(
                    "PASS environment {}: deployed by {} ({url})",
                    e.name, e.deployed_by
                )),
            }
        }
        lines
    }
}

/// Reads and parses a pipeline file.
pub fn load(path: &Path) -> Result<Pipeline> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse(&text).map_err(|problems| Error::Pipeline {
        path: path.display().to_string(),
        problems,
    })
}

/// Creates the pipeline `spec` describes and runs it on `runner`.
pub fn run(runner: &Runner, spec: &PipelineSpec, options: &RunOptions) -> Result<PipelineRun> {
    let pipeline = load(&spec.file)?;
    let content = spec
        .file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let repo_dir = tempfile::Builder::new()
        .prefix("pipeline-repo")
        .tempdir()
        .map_err(|e| Error::io("creating the pipeline repository dir", e))?;
    let committed = repo_dir.path().join("repo");
    let repo = crate::runner::repo::prepare(&Source::Dir(content), &spec.branch, &committed)?;
    let merge_request = (spec.source == PipelineSource::MergeRequestEvent).then(|| MergeRequest {
        iid: spec.merge_request_iid,
        target_branch: spec.default_branch.clone(),
    });
    let context = Context {
        source: spec.source,
        branch: spec.branch.clone(),
        default_branch: spec.default_branch.clone(),
        merge_request,
        project: spec.project.clone(),
        sha: repo.sha,
        pipeline_id: spec.pipeline_id.unwrap_or_else(pipeline_id),
        server_url: runner.config().server_url.clone(),
    };
    let plan = plan(&pipeline, &context).map_err(|problems| Error::Pipeline {
        path: spec.file.display().to_string(),
        problems,
    })?;
    let mut state = State {
        runner,
        pipeline: &pipeline,
        plan: &plan,
        context: &context,
        repo: committed,
        options,
        jobs: Vec::new(),
        dotenvs: HashMap::new(),
        environments: Vec::new(),
    };
    for planned in &plan.jobs {
        state.execute(planned, Trigger::Pipeline)?;
    }
    if options.stop_environments {
        let to_stop: Vec<(String, String)> = state
            .environments
            .iter()
            .filter(|e| e.stopped_by.is_none())
            .filter_map(|e| e.on_stop.clone().map(|s| (e.name.clone(), s)))
            .collect();
        for (env, stop) in to_stop {
            match plan.job(&stop) {
                Some(planned) => state.execute(planned, Trigger::EnvironmentStop(env))?,
                None => state.jobs.push(JobRecord {
                    name: stop,
                    stage: String::new(),
                    trigger: Trigger::EnvironmentStop(env),
                    status: JobStatus::Stuck(
                        "the on_stop job is not in this pipeline (its rules left it out)"
                            .to_owned(),
                    ),
                    variables: Vec::new(),
                    result: None,
                }),
            }
        }
    }
    let State {
        jobs, environments, ..
    } = state;
    Ok(PipelineRun {
        context,
        plan,
        jobs,
        environments,
        stop_requested: options.stop_environments,
        _repo: repo_dir,
    })
}

/// A pipeline id unlikely to repeat across runs (it names resources through tags).
fn pipeline_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    1000 + u64::from(nanos % 1_000_000)
}

struct State<'a> {
    runner: &'a Runner,
    pipeline: &'a Pipeline,
    plan: &'a Plan,
    context: &'a Context,
    repo: PathBuf,
    options: &'a RunOptions,
    jobs: Vec<JobRecord>,
    dotenvs: HashMap<String, Vec<(String, String)>>,
    environments: Vec<EnvironmentRecord>,
}

impl State<'_> {
    fn latest(&self, name: &str) -> Option<&JobRecord> {
        self.jobs.iter().rev().find(|j| j.name == name)
    }

    fn echo(&self, line: &str) {
        if self.runner.config().echo_log {
            println!("{line}");
        }
    }

    /// Why the job must not run now, if it must not.
    fn gate(&self, planned: &PlannedJob, trigger: &Trigger) -> Option<JobStatus> {
        let job = &planned.job;
        if planned.when == When::Manual && *trigger == Trigger::Pipeline {
            return Some(JobStatus::Manual);
        }
        let mut failed = None;
        let mut waiting = None;
        match &job.needs {
            Some(needs) => {
                for need in needs {
                    match self.latest(&need.job) {
                        // An optional need left out by rules.
                        None => {}
                        Some(r) if r.passed() => {}
                        Some(r) => match &r.status {
                            JobStatus::Manual => {
                                waiting = Some(format!("waits for manual job `{}`", r.name));
                            }
                            JobStatus::Failed { .. } => {
                                failed = Some(format!("needed job `{}` failed", r.name));
                            }
                            _ => waiting = Some(format!("needed job `{}` did not run", r.name)),
                        },
                    }
                }
            }
            None => {
                let stage = self.pipeline.stage_index(&job.stage);
                for r in self.jobs.iter().filter(|r| {
                    r.trigger == Trigger::Pipeline && self.pipeline.stage_index(&r.stage) < stage
                }) {
                    match &r.status {
                        JobStatus::Failed { allowed: false, .. } => {
                            failed = Some(format!("earlier job `{}` failed", r.name));
                        }
                        JobStatus::Stuck(_) => {
                            waiting = Some(format!("earlier job `{}` is stuck", r.name));
                        }
                        // A manual job that may not fail blocks the stages after it.
                        JobStatus::Manual
                            if self.plan.job(&r.name).is_some_and(|p| !p.allow_failure.any) =>
                        {
                            waiting = Some(format!(
                                "the pipeline is blocked by manual job `{}`",
                                r.name
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        match planned.when {
            When::OnSuccess => failed.or(waiting).map(JobStatus::Skipped),
            When::OnFailure if failed.is_none() => {
                Some(JobStatus::Skipped("no earlier job failed".to_owned()))
            }
            When::OnFailure => waiting.map(JobStatus::Skipped),
            When::Always | When::Manual | When::Never => None,
        }
    }

    fn execute(&mut self, planned: &PlannedJob, trigger: Trigger) -> Result<()> {
        let job = &planned.job;
        let mut record = JobRecord {
            name: job.name.clone(),
            stage: job.stage.clone(),
            trigger: trigger.clone(),
            status: JobStatus::Success,
            variables: Vec::new(),
            result: None,
        };
        if let Some(status) = self.gate(planned, &trigger) {
            record.status = status;
            self.jobs.push(record);
            return Ok(());
        }
        let tags_ok = job
            .tags
            .iter()
            .all(|t| self.options.runner_tags.contains(t))
            && (!job.tags.is_empty() || self.options.run_untagged);
        if !tags_ok {
            record.status = JobStatus::Stuck(format!(
                "no runner takes it (job tags [{}], runner tags [{}]{})",
                job.tags.join(", "),
                self.options.runner_tags.join(", "),
                if self.options.run_untagged {
                    ", runs untagged jobs"
                } else {
                    ""
                }
            ));
            self.jobs.push(record);
            return Ok(());
        }

        // Artifacts and dotenv variables come from the jobs it depends on.
        let sources: Vec<String> = match (&job.dependencies, &job.needs) {
            (Some(deps), _) => deps.clone(),
            (None, Some(needs)) => needs
                .iter()
                .filter(|n| n.artifacts)
                .map(|n| n.job.clone())
                .collect(),
            (None, None) => {
                let stage = self.pipeline.stage_index(&job.stage);
                self.jobs
                    .iter()
                    .filter(|r| self.pipeline.stage_index(&r.stage) < stage)
                    .map(|r| r.name.clone())
                    .collect()
            }
        };
        let mut dotenv = Vec::new();
        let mut dependencies = Vec::new();
        for source in &sources {
            let Some(upstream) = self.latest(source) else {
                continue;
            };
            if let Some(vars) = self.dotenvs.get(source) {
                dotenv.extend(vars.iter().cloned());
            }
            if let Some(result) = &upstream.result {
                dependencies.extend(archive_of(result)?);
            }
        }

        let mut vars = self.context.predefined();
        vars.push(Var::raw("CI_JOB_NAME", job.name.clone()));
        vars.push(Var::raw("CI_JOB_STAGE", job.stage.clone()));
        let predefined_len = vars.len();
        vars.extend(self.pipeline.variables.iter().cloned());
        vars.extend(job.variables.iter().cloned());
        vars.extend(planned.rule_variables.iter().cloned());
        vars.extend(dotenv.iter().map(|(k, v)| Var::raw(k.clone(), v.clone())));
        let expanded = expand_nested(&vars).map_err(|e| Error::Pipeline {
            path: job.name.clone(),
            problems: vec![format!("job `{}`: variables: {e}", job.name)],
        })?;
        let lookup = |name: &str| {
            expanded
                .iter()
                .rev()
                .find(|v| v.key == name)
                .map(|v| v.value.clone())
        };
        let mut user: Vec<Variable> = Vec::new();
        for (index, v) in expanded.iter().enumerate().skip(predefined_len) {
            user.retain(|u| u.key != v.key);
            // Dotenv values reach the runner like any variable (it expands them); only
            // `expand: false` variables are sent raw.
            let from_dotenv = index >= vars.len() - dotenv.len();
            user.push(Variable {
                key: v.key.clone(),
                value: v.value.clone(),
                file: false,
                masked: false,
                raw: v.raw && !from_dotenv,
            });
        }
        record.variables = user
            .iter()
            .map(|v| (v.key.clone(), v.value.clone()))
            .collect();

        let mut predefined = self.context.merge_request_variables();
        let environment = job.environment.as_ref().map(|env| {
            let name = expand_server(&env.name, &lookup, false);
            let url = env.url.as_ref().map(|u| expand_server(u, &lookup, false));
            (env, name, url)
        });
        if let Some((env, name, url)) = &environment {
            predefined.push(("CI_ENVIRONMENT_NAME".to_owned(), name.clone()));
            predefined.push(("CI_ENVIRONMENT_SLUG".to_owned(), environment_slug(name)));
            predefined.push((
                "CI_ENVIRONMENT_ACTION".to_owned(),
                env.action.as_str().to_owned(),
            ));
            predefined.push((
                "CI_ENVIRONMENT_TIER".to_owned(),
                environment_tier(name).to_owned(),
            ));
            if let Some(url) = url.as_ref().filter(|u| !u.is_empty()) {
                predefined.push(("CI_ENVIRONMENT_URL".to_owned(), url.clone()));
            }
        }
        let mut script = job.before_script.clone();
        script.extend(job.script.iter().cloned());
        let fixture = JobFixture {
            name: job.name.clone(),
            stage: job.stage.clone(),
            id: None,
            pipeline_id: Some(self.context.pipeline_id),
            image: job.image.clone(),
            variables: user,
            script,
            after_script: job.after_script.clone(),
            steps: Vec::new(),
            hooks: Hooks::default(),
            artifacts: job.artifacts.clone(),
            cache: job.cache.clone(),
            dependencies,
            needs: Vec::new(),
            timeout: job.timeout.unwrap_or(Duration::from_secs(3600)),
            git_ref: self.context.branch.clone(),
            protected: self.context.protected(),
            default_branch: self.context.default_branch.clone(),
            pipeline_source: self.context.source.as_str().to_owned(),
            predefined,
            project: self.context.project.clone(),
            source: Source::Dir(self.repo.clone()),
            expect: None,
        };
        let why = match &trigger {
            Trigger::Pipeline => String::new(),
            Trigger::EnvironmentStop(env) => format!(", stopping environment {env}"),
        };
        self.echo(&format!(
            "\n=== job {} (stage {}{why}) ===",
            job.name, job.stage
        ));
        let result = self.runner.run(&fixture)?;
        record.status = match &result.outcome {
            JobOutcome::Success => JobStatus::Success,
            outcome => {
                let code_allowed = matches!(outcome, JobOutcome::Failed { exit_code }
                    if planned.allow_failure.exit_codes.contains(exit_code));
                JobStatus::Failed {
                    outcome: outcome.to_string(),
                    allowed: planned.allow_failure.any || code_allowed,
                }
            }
        };
        let own_dotenv = result.dotenv().unwrap_or_default();
        self.dotenvs.insert(job.name.clone(), own_dotenv.clone());
        if record.status == JobStatus::Success
            && let Some((env, name, _)) = &environment
        {
            match env.action {
                EnvironmentAction::Start => {
                    // The URL may name the job's own dotenv variables (GitLab resolves it
                    // after the job).
                    let url = env.url.as_ref().map(|u| {
                        expand_server(
                            u,
                            &|key| {
                                own_dotenv
                                    .iter()
                                    .rev()
                                    .find(|(k, _)| k == key)
                                    .map(|(_, v)| v.clone())
                                    .or_else(|| lookup(key))
                            },
                            false,
                        )
                    });
                    self.echo(&format!(
                        "=== environment {name}: deployed by {} at {} ===",
                        job.name,
                        url.as_deref().unwrap_or("(no url)")
                    ));
                    self.environments.retain(|e| &e.name != name);
                    self.environments.push(EnvironmentRecord {
                        name: name.clone(),
                        url,
                        deployed_by: job.name.clone(),
                        on_stop: env.on_stop.clone(),
                        stopped_by: None,
                    });
                }
                EnvironmentAction::Stop => {
                    self.echo(&format!(
                        "=== environment {name}: stopped by {} ===",
                        job.name
                    ));
                    for e in self.environments.iter_mut().filter(|e| &e.name == name) {
                        e.stopped_by = Some(job.name.clone());
                    }
                }
                EnvironmentAction::Prepare
                | EnvironmentAction::Verify
                | EnvironmentAction::Access => {}
            }
        }
        record.result = Some(result);
        self.jobs.push(record);
        Ok(())
    }
}

/// The uploaded `artifacts:paths` of a finished job, as a dependency of a later one.
fn archive_of(result: &JobResult) -> Result<Option<Dependency>> {
    let files = result.uploaded_files();
    if files.is_empty() {
        return Ok(None);
    }
    let root = result.uploaded_artifacts_dir.join("archive");
    let mut contents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root.join(&file)).map_err(|e| {
            Error::io(
                format!(
                    "reading artifact {file} of job {} (the emulator passes text artifacts only)",
                    result.name
                ),
                e,
            )
        })?;
        contents.push((file, text));
    }
    Ok(Some(Dependency {
        name: result.name.clone(),
        id: Some(result.id),
        files: contents,
    }))
}

/// `CI_ENVIRONMENT_SLUG`: the name lowercased, other characters as `-`, at most 24
/// characters, starting with a letter.
fn environment_slug(name: &str) -> String {
    let slug = ref_slug(name);
    let slug = if slug.starts_with(|c: char| c.is_ascii_alphabetic()) {
        slug
    } else {
        format!("env-{slug}")
    };
    slug.chars()
        .take(24)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// `CI_ENVIRONMENT_TIER` as GitLab guesses it from the name.
fn environment_tier(name: &str) -> &'static str {
    let guesses = [
        ("development", r"(?i)(dev|review|trunk)"),
        (
            "testing",
            r"(?i)(test|tst|int|ac(ce|)pt|qa|qc|control|quality)",
        ),
        ("staging", r"(?i)(st(a|)g|mod(e|)l|pre|demo|non)"),
        ("production", r"(?i)(pr(o|)d|live)"),
    ];
    guesses
        .iter()
        .find(|(_, pattern)| Regex::new(pattern).is_ok_and(|r| r.is_match(name)))
        .map_or("other", |(tier, _)| tier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_slug_and_tier_follow_gitlab() {
        assert_eq!(environment_slug("review/17"), "review-17");
        assert_eq!(environment_slug("1-prod"), "env-1-prod");
        assert_eq!(environment_tier("review/17"), "development");
        assert_eq!(environment_tier("production"), "production");
        assert_eq!(environment_tier("api/production"), "production");
        assert_eq!(environment_tier("somewhere"), "other");
    }
}
