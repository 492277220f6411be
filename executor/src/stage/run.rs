//! The `run` stage: local stages run with bash on the runner host; the user-script stages
//! (`build_script`, `step_script`, any `step_*`) go to the job's action.

use std::path::Path;

use stages::job::Job;
use stages::project_files::ProjectDir;
use stages::settings::{self, Settings, spec};
use stages::state::StateFile;
use tokio_util::sync::CancellationToken;

use crate::context;
use crate::error::ExecutorError;
use crate::exit::ExitCodes;
use crate::local;

/// Whether `stage` runs the job's own script (sent as `build_script` or `step_*`).
pub fn is_user_script(stage: &str) -> bool {
    stage == "build_script" || stage.starts_with("step_")
}

pub async fn run(
    config: &Path,
    script: &Path,
    stage: &str,
    codes: ExitCodes,
    cancel: &CancellationToken,
) -> Result<(), ExecutorError> {
    if !is_user_script(stage) {
        return run_local(config, script, codes.system);
    }
    let cfg = stages::config::load_file(config)?;
    let ctx = context::load()?;
    let project_dir = context::project_dir()?;
    let spec = read_spec(&ctx.job, &project_dir)?;
    let settings = Settings::collect(&ctx.job, spec.as_ref().map(|(f, s)| (f.as_str(), s)));
    let plan =
        settings::resolve(&ctx.job, ctx.shape, &cfg, &settings).map_err(ExecutorError::Rejected)?;
    let credentials =
        stages::aws::credentials::for_job(&cfg, &ctx.job, std::time::SystemTime::now())
            .map_err(ExecutorError::Rejected)?;
    let state = StateFile::new(&cfg.paths.state_root, ctx.job.id);
    let launcher = watcher_launcher(config);
    let input = stages::ctx::StageInput {
        cfg: &cfg,
        job: &ctx.job,
        stage,
        script,
        project_dir: &project_dir,
        state: &state,
        cancel,
        credentials: &credentials,
        launcher: launcher.as_ref(),
    };
    stages::run::run_user_stage(&plan, input).await?;
    Ok(())
}

/// A stage that runs on the runner host: the script with bash, as the `[local] user` when one
/// is configured. Reads only what it needs of the config (see
/// [`stages::config::load_host_stage`]).
pub fn run_local(
    config: &Path,
    script: &Path,
    system_failure_code: u8,
) -> Result<(), ExecutorError> {
    let host = stages::config::load_host_stage(config)?;
    let run_as = match host.local_user {
        None => local::RunAs::Executor,
        Some(user) => local::RunAs::User {
            user,
            builds_dir: host.builds_root.join(context::load()?.job.id.to_string()),
        },
    };
    match local::run_script(script, &run_as, system_failure_code)? {
        0 => Ok(()),
        code => Err(ExecutorError::Script(code)),
    }
}

/// This binary in its `watch-host` mode with the same config (an absolute path: the watcher
/// runs from the state root); `None` when the binary's own path is unknown.
fn watcher_launcher(config: &Path) -> Option<stages::watch::host::Launcher> {
    let program = std::env::current_exe().ok()?;
    let config = std::path::absolute(config).ok()?;
    Some(stages::watch::host::Launcher {
        program,
        args: vec!["--config".into(), config.into(), "watch-host".into()],
    })
}

/// Reads the spec file named by `SAGEMAKER_SPEC`, relative to the checked-out project.
fn read_spec(job: &Job, project_dir: &Path) -> Result<Option<(String, spec::Spec)>, ExecutorError> {
    let Some(rel) = job
        .variables
        .get("SAGEMAKER_SPEC")
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    // Confined to the checkout: a spec path (or a symlink in it) leading out of the project dir
    // is refused before anything is read, so no runner-host file reaches the job log.
    let project = ProjectDir::open(project_dir).map_err(|e| ExecutorError::Spec(e.to_string()))?;
    let parsed = spec::read(&project, rel).map_err(ExecutorError::Spec)?;
    Ok(Some((rel.to_owned(), parsed)))
}

#[cfg(test)]
mod tests {
    use super::is_user_script;

    #[test]
    fn user_script_stages() {
        for s in ["build_script", "step_script", "step_release"] {
            assert!(is_user_script(s), "{s}");
        }
        for s in [
            "prepare_script",
            "get_sources",
            "after_script",
            "upload_artifacts_on_failure",
            "cleanup_file_variables",
        ] {
            assert!(!is_user_script(s), "{s}");
        }
    }
}
