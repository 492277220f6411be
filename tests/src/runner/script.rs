//! The run-stage scripts, in gitlab-runner's bash layout (protocol §8).
//!
//! The runner host has no `gitlab-runner` binary, so the helper work that the real scripts
//! delegate to it (cache archiving, artifact download and upload) is written here in plain
//! bash. It runs where the real helpers would run: inside the stage script, through the
//! executor under test. "Uploading" copies into a directory of the emulator, which stands in
//! for GitLab.

use std::fmt::Write as _;
use std::path::Path;

use super::payload::{Dirs, JobSpec, JobVariable};

/// One run stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    PrepareScript,
    GetSources,
    ClearWorktree,
    RestoreCache,
    DownloadArtifacts,
    /// A user step: `script` (the `script:` keyword) or a named extra step.
    Step(String),
    AfterScript,
    ArchiveCache {
        on_failure: bool,
    },
    UploadArtifacts {
        on_failure: bool,
    },
    CleanupFileVariables,
}

impl Stage {
    /// The name passed to run_exec: `step_script` is sent as `build_script`.
    pub(crate) fn sent_name(&self) -> String {
        match self {
            Stage::Step(name) if name == "script" => "build_script".to_owned(),
            Stage::Step(name) => format!("step_{name}"),
            other => other.section_name(),
        }
    }

    /// The name in the job log (section markers and header), like the runner's.
    pub(crate) fn section_name(&self) -> String {
        match self {
            Stage::PrepareScript => "prepare_script".to_owned(),
            Stage::GetSources => "get_sources".to_owned(),
            Stage::ClearWorktree => "clear_worktree".to_owned(),
            Stage::RestoreCache => "restore_cache".to_owned(),
            Stage::DownloadArtifacts => "download_artifacts".to_owned(),
            Stage::Step(name) => format!("step_{name}"),
            Stage::AfterScript => "after_script".to_owned(),
            Stage::ArchiveCache { on_failure: false } => "archive_cache".to_owned(),
            Stage::ArchiveCache { on_failure: true } => "archive_cache_on_failure".to_owned(),
            Stage::UploadArtifacts { on_failure: false } => {
                "upload_artifacts_on_success".to_owned()
            }
            Stage::UploadArtifacts { on_failure: true } => "upload_artifacts_on_failure".to_owned(),
            Stage::CleanupFileVariables => "cleanup_file_variables".to_owned(),
        }
    }

    pub(crate) fn is_user_step(&self) -> bool {
        matches!(self, Stage::Step(_))
    }
}

/// Everything a stage script needs.
pub(crate) struct ScriptContext<'a> {
    pub(crate) spec: &'a JobSpec,
    /// Expanded variables, with CI_JOB_STATUS as of this stage.
    pub(crate) vars: &'a [JobVariable],
    pub(crate) dirs: &'a Dirs,
    /// Build.Hostname: config output `hostname`, else the runner host's name.
    pub(crate) hostname: &'a str,
    /// The emulated GitLab's artifact store for this job.
    pub(crate) uploaded_dir: &'a Path,
    /// Whether the job has failed so far (selects on_failure entries).
    pub(crate) failed: bool,
}

/// Single-quotes `s` for bash.
pub(crate) fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn sq_path(p: &Path) -> String {
    sq(&p.to_string_lossy())
}

/// The full script file for `stage`.
pub(crate) fn render(stage: &Stage, ctx: &ScriptContext<'_>) -> String {
    let body = body(stage, ctx);
    let mut script = String::new();
    script.push_str("#!/usr/bin/env bash\n\n");
    script.push_str("trap 'exit 1' TERM\n\n");
    script.push_str("set -o pipefail\nset -o errexit\nset +o noclobber\n");
    let _ = writeln!(
        script,
        "( trap 'exit 1' TERM; eval {} ) < /dev/null",
        sq(&body)
    );
    script.push_str("exit 0\n");
    script
}

enum Prelude {
    /// Exports, file variables and GITLAB_ENV (every stage that touches the project).
    Full,
    /// Exports only: cleanup_file_variables must not recreate the files it deletes.
    ExportsOnly,
}

fn prelude(ctx: &ScriptContext<'_>, kind: Prelude, out: &mut String) {
    for v in ctx.vars.iter().filter(|v| !v.file) {
        let _ = writeln!(out, "export {}={}", v.key, sq(&v.value));
    }
    if matches!(kind, Prelude::ExportsOnly) {
        return;
    }
    out.push_str("mkdir -p \"$CI_PROJECT_DIR.tmp\"\n");
    for v in ctx.vars.iter().filter(|v| v.file) {
        let _ = writeln!(
            out,
            "printf '%s' {} > \"$CI_PROJECT_DIR.tmp/{key}\"\nexport {key}=\"$CI_PROJECT_DIR.tmp/{key}\"",
            sq(&v.value),
            key = v.key
        );
    }
    out.push_str(concat!(
        "export GITLAB_ENV=\"$CI_PROJECT_DIR.tmp/gitlab_runner_env\"\n",
        "[ -e \"$GITLAB_ENV\" ] || : > \"$GITLAB_ENV\"\n",
        "while IFS= read -r __gl_line || [ -n \"$__gl_line\" ]; do\n",
        "  case \"$__gl_line\" in [A-Za-z_]*=*) export \"$__gl_line\" ;; esac\n",
        "done < \"$GITLAB_ENV\"\n",
    ));
}

/// Echo each command in green, then run it, like the runner's user-script stages.
fn commands(lines: &[String], out: &mut String) {
    for line in lines {
        let _ = writeln!(out, "printf '\\033[32;1m$ %s\\033[0;m\\n' {}", sq(line));
        out.push_str(line);
        out.push('\n');
    }
}

/// Defines `__e2e_match PATTERN...`: fills `__e2e_files` with existing paths matching the
/// globs (relative to the cwd, `**` allowed), warning for patterns that match nothing.
const MATCH_FN: &str = r#"__e2e_match() {
  local IFS= __p __f __found
  __e2e_files=()
  shopt -s globstar nullglob dotglob
  for __p in "$@"; do
    __found=0
    for __f in $__p; do
      if [ -e "$__f" ] || [ -L "$__f" ]; then __e2e_files+=("$__f"); __found=1; fi
    done
    if [ "$__found" = 0 ]; then
      echo "WARNING: $__p: no matching files. Ensure that the artifact path is relative to the working directory ($CI_PROJECT_DIR)"
    fi
  done
  shopt -u globstar nullglob dotglob
}
__e2e_untracked() {
  local __f
  while IFS= read -r __f; do __e2e_files+=("$__f"); done < <(git ls-files -o --exclude-standard 2>/dev/null)
}
"#;

/// GitLab's server-side dotenv checks (protocol §13): a violation makes the upload fail with
/// a 400, which fails the stage like a real rejected upload would.
const DOTENV_FN: &str = r#"__e2e_dotenv_check() {
  local f="$1" size n=0 line key
  size=$(wc -c < "$f")
  if [ "$size" -ge 5120 ]; then
    echo "ERROR: Uploading artifacts as \"dotenv\" to coordinator... 400 Bad Request (Dotenv Artifact Too Big)"; return 1
  fi
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
      *=*) ;;
      *) echo "ERROR: Uploading artifacts as \"dotenv\" to coordinator... 400 Bad Request (Invalid Format)"; return 1 ;;
    esac
    key="${line%%=*}"
    key="${key#"${key%%[![:space:]]*}"}"
    key="${key%"${key##*[![:space:]]}"}"
    if ! [[ "$key" =~ ^[A-Za-z0-9_]+$ ]] || [ "${#key}" -gt 255 ]; then
      echo "ERROR: Uploading artifacts as \"dotenv\" to coordinator... 400 Bad Request (Invalid Format)"; return 1
    fi
    n=$((n + 1))
  done < "$f"
  if [ "$n" -gt 150 ]; then
    echo "ERROR: Uploading artifacts as \"dotenv\" to coordinator... 400 Bad Request (Dotenv files cannot have more than 150 variables)"; return 1
  fi
}
"#;

fn cache_archive(ctx: &ScriptContext<'_>, key: &str) -> std::path::PathBuf {
    ctx.dirs
        .cache_dir
        .join(&ctx.spec.fixture.project.path)
        .join(key)
        .join("cache.tar")
}

fn body(stage: &Stage, ctx: &ScriptContext<'_>) -> String {
    let f = &ctx.spec.fixture;
    let mut out = String::new();
    match stage {
        Stage::PrepareScript => {
            let _ = writeln!(
                out,
                "echo \"Running on $(hostname) via \"{}\"...\"",
                sq(ctx.hostname)
            );
        }
        Stage::GetSources => {
            prelude(ctx, Prelude::Full, &mut out);
            let strategy = f.variable("GIT_STRATEGY").unwrap_or("fetch");
            if !f.hooks.pre_get_sources_script.is_empty() {
                commands(&f.hooks.pre_get_sources_script, &mut out);
            }
            if strategy == "none" {
                out.push_str(
                    "echo 'Skipping Git repository setup'\nmkdir -p \"$CI_PROJECT_DIR\"\n",
                );
            } else {
                let sha = &ctx.spec.repo.sha;
                if strategy == "clone" {
                    out.push_str("rm -rf \"$CI_PROJECT_DIR\"\n");
                }
                let _ = write!(
                    out,
                    concat!(
                        "printf '\\033[32;1m%s\\033[0;m\\n' 'Fetching changes with git depth set to 20...'\n",
                        "mkdir -p \"$CI_PROJECT_DIR\"\n",
                        "cd \"$CI_PROJECT_DIR\"\n",
                        "if [ -d .git ]; then echo \"Reinitialized existing Git repository in $CI_PROJECT_DIR/.git/\"\n",
                        "else git -c init.defaultBranch=main init -q && echo \"Initialized empty Git repository in $CI_PROJECT_DIR/.git/\"; fi\n",
                        "git remote remove origin >/dev/null 2>&1 || true\n",
                        "git remote add origin {url}\n",
                        "git fetch -q --prune origin '+refs/heads/*:refs/remotes/origin/*' '+refs/tags/*:refs/tags/*'\n",
                        "printf '\\033[32;1m%s\\033[0;m\\n' {checking}\n",
                        "git -c advice.detachedHead=false checkout -f -q {sha}\n",
                        "git clean -ffdx -q\n",
                    ),
                    url = sq_path(&ctx.spec.repo.url),
                    checking = sq(&format!(
                        "Checking out {} as detached HEAD (ref is {})...",
                        sha.chars().take(8).collect::<String>(),
                        f.git_ref
                    )),
                    sha = sq(sha),
                );
            }
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            if !f.hooks.post_get_sources_script.is_empty() {
                commands(&f.hooks.post_get_sources_script, &mut out);
            }
        }
        Stage::ClearWorktree => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str("echo 'Clearing the worktree before retrying'\nrm -rf \"$CI_PROJECT_DIR\"\nmkdir -p \"$CI_PROJECT_DIR\"\n");
        }
        Stage::RestoreCache => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            for cache in f.cache.iter().filter(|c| c.policy.pulls()) {
                let archive = sq_path(&cache_archive(ctx, &cache.key));
                let _ = write!(
                    out,
                    concat!(
                        "echo {checking}\n",
                        "if [ -f {a} ]; then\n",
                        "  if tar -xf {a}; then echo 'Successfully extracted cache'; else echo 'WARNING: Failed to extract cache'; fi\n",
                        "else echo 'WARNING: '{a}': file does not exist'; echo 'Failed to extract cache'; fi\n",
                    ),
                    checking = sq(&format!("Checking cache for {}...", cache.key)),
                    a = archive,
                );
            }
        }
        Stage::DownloadArtifacts => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            for dep in &ctx.spec.dependencies {
                let _ = write!(
                    out,
                    "echo {}\ntar -xf {}\necho {}\n",
                    sq(&format!(
                        "Downloading artifacts for {} ({})...",
                        dep.name, dep.id
                    )),
                    sq_path(&dep.archive),
                    sq(&format!(
                        "Downloading artifacts from coordinator... ok  id={} responseStatus=200 OK",
                        dep.id
                    )),
                );
            }
        }
        Stage::Step(name) => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            let lines = if name == "script" {
                &f.script
            } else {
                f.steps
                    .iter()
                    .find(|s| &s.name == name)
                    .map(|s| &s.script)
                    .unwrap_or(&f.script)
            };
            commands(lines, &mut out);
        }
        Stage::AfterScript => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            commands(&f.after_script, &mut out);
        }
        Stage::ArchiveCache { .. } => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str(MATCH_FN);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            for cache in f
                .cache
                .iter()
                .filter(|c| c.policy.pushes() && c.when.applies(ctx.failed))
            {
                let archive = cache_archive(ctx, &cache.key);
                let dir = archive.parent().unwrap_or(&ctx.dirs.cache_dir);
                let patterns: Vec<String> = cache.paths.iter().map(|p| sq(p)).collect();
                let _ = write!(
                    out,
                    concat!(
                        "echo {creating}\n",
                        "__e2e_match {patterns}\n",
                        "{untracked}",
                        "if [ \"${{#__e2e_files[@]}}\" -gt 0 ]; then\n",
                        "  mkdir -p {dir}\n",
                        "  if tar -cf {a}.tmp -- \"${{__e2e_files[@]}}\" && mv -f {a}.tmp {a}; then echo 'Created cache'\n",
                        "  else echo 'WARNING: Failed to create cache'; fi\n",
                        "else echo 'WARNING: Cache: no matching files. Failed to create cache'; fi\n",
                    ),
                    creating = sq(&format!("Creating cache {}...", cache.key)),
                    patterns = patterns.join(" "),
                    untracked = if cache.untracked {
                        "__e2e_untracked\n"
                    } else {
                        ""
                    },
                    dir = sq_path(dir),
                    a = sq_path(&archive),
                );
            }
        }
        Stage::UploadArtifacts { .. } => {
            prelude(ctx, Prelude::Full, &mut out);
            out.push_str(MATCH_FN);
            out.push_str(DOTENV_FN);
            out.push_str("cd \"$CI_PROJECT_DIR\"\n");
            if let Some(a) = f.artifacts.as_ref().filter(|a| a.when.applies(ctx.failed)) {
                if !a.paths.is_empty() || a.untracked {
                    let patterns: Vec<String> = a.paths.iter().map(|p| sq(p)).collect();
                    let excludes: Vec<String> = a
                        .exclude
                        .iter()
                        .map(|p| sq(&format!("--exclude={p}")))
                        .collect();
                    let dest = ctx.uploaded_dir.join("archive");
                    let _ = write!(
                        out,
                        concat!(
                            "echo 'Uploading artifacts...'\n",
                            "__e2e_match {patterns}\n",
                            "{untracked}",
                            "if [ \"${{#__e2e_files[@]}}\" -gt 0 ]; then\n",
                            "  mkdir -p {dest}\n",
                            "  tar -cf - {excludes} -- \"${{__e2e_files[@]}}\" | tar -xf - -C {dest}\n",
                            "  echo 'Uploading artifacts as \"archive\" to coordinator... 201 Created  id={id} responseStatus=201 Created'\n",
                            "else echo 'ERROR: No files to upload'; fi\n",
                        ),
                        patterns = patterns.join(" "),
                        untracked = if a.untracked { "__e2e_untracked\n" } else { "" },
                        dest = sq_path(&dest),
                        excludes = excludes.join(" "),
                        id = ctx.spec.id,
                    );
                }
                if let Some(dotenv) = &a.reports.dotenv {
                    let dest = ctx.uploaded_dir.join("dotenv");
                    let target = dest.join(dotenv);
                    let target_dir = target.parent().unwrap_or(&dest);
                    let _ = write!(
                        out,
                        concat!(
                            "echo 'Uploading artifacts...'\n",
                            "if [ -f {f} ]; then\n",
                            "  __e2e_dotenv_check {f} || exit 1\n",
                            "  mkdir -p {dir}\n",
                            "  cp {f} {target}\n",
                            "  echo 'Uploading artifacts as \"dotenv\" to coordinator... 201 Created  id={id} responseStatus=201 Created'\n",
                            "else echo 'WARNING: '{f}': no matching files. Ensure that the artifact path is relative to the working directory'\n",
                            "  echo 'ERROR: No files to upload'; fi\n",
                        ),
                        f = sq(dotenv),
                        dir = sq_path(target_dir),
                        target = sq_path(&target),
                        id = ctx.spec.id,
                    );
                }
                // GitLab checks nothing in a metrics report; the emulator keeps the file.
                if let Some(metrics) = &a.reports.metrics {
                    let dest = ctx.uploaded_dir.join("metrics");
                    let target = dest.join(metrics);
                    let target_dir = target.parent().unwrap_or(&dest);
                    let _ = write!(
                        out,
                        concat!(
                            "echo 'Uploading artifacts...'\n",
                            "if [ -f {f} ]; then\n",
                            "  mkdir -p {dir}\n",
                            "  cp {f} {target}\n",
                            "  echo 'Uploading artifacts as \"metrics\" to coordinator... 201 Created  id={id} responseStatus=201 Created'\n",
                            "else echo 'WARNING: '{f}': no matching files. Ensure that the artifact path is relative to the working directory'\n",
                            "  echo 'ERROR: No files to upload'; fi\n",
                        ),
                        f = sq(metrics),
                        dir = sq_path(target_dir),
                        target = sq_path(&target),
                        id = ctx.spec.id,
                    );
                }
            }
        }
        Stage::CleanupFileVariables => {
            prelude(ctx, Prelude::ExportsOnly, &mut out);
            for v in ctx.vars.iter().filter(|v| v.file) {
                let _ = writeln!(out, "rm -f \"$CI_PROJECT_DIR.tmp/{}\"", v.key);
            }
            out.push_str("rm -f \"$CI_PROJECT_DIR.tmp/gitlab_runner_env\"\n");
        }
    }
    out
}

/// Whether a stage has anything to do for this job; the runner never sends skipped stages.
pub(crate) fn needed(stage: &Stage, spec: &JobSpec, failed: bool) -> bool {
    let f = &spec.fixture;
    match stage {
        Stage::PrepareScript | Stage::GetSources | Stage::ClearWorktree => true,
        Stage::CleanupFileVariables => true,
        Stage::RestoreCache => f
            .cache
            .iter()
            .any(|c| c.policy.pulls() && (!c.paths.is_empty() || c.untracked)),
        Stage::DownloadArtifacts => !spec.dependencies.is_empty(),
        Stage::Step(name) => {
            if name == "script" {
                !f.script.is_empty()
            } else {
                f.steps
                    .iter()
                    .any(|s| &s.name == name && !s.script.is_empty())
            }
        }
        Stage::AfterScript => !f.after_script.is_empty(),
        Stage::ArchiveCache { .. } => f.cache.iter().any(|c| {
            c.policy.pushes() && c.when.applies(failed) && (!c.paths.is_empty() || c.untracked)
        }),
        Stage::UploadArtifacts { .. } => f.artifacts.as_ref().is_some_and(|a| {
            a.when.applies(failed)
                && (!a.paths.is_empty()
                    || a.untracked
                    || a.reports.dotenv.is_some()
                    || a.reports.metrics.is_some())
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_quotes_survive_two_levels_of_quoting() {
        // The value is quoted once for `export`, then the whole body again for `eval`.
        let value = "it's a 'test' with $HOME and \\ and \"q\"";
        let body = format!("export X={}\nprintf '%s' \"$X\"", sq(value));
        let script = format!("eval {}", sq(&body));
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    }

    #[test]
    fn stage_names_follow_the_runner() {
        assert_eq!(Stage::Step("script".into()).sent_name(), "build_script");
        assert_eq!(Stage::Step("script".into()).section_name(), "step_script");
        assert_eq!(Stage::Step("release".into()).sent_name(), "step_release");
        assert_eq!(
            Stage::UploadArtifacts { on_failure: true }.sent_name(),
            "upload_artifacts_on_failure"
        );
    }
}
