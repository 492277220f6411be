//! A tiny custom-executor driver in bash, the counterpart of gitlab-runner's own
//! `testdata/test_executor`: it lets the emulator's self-tests exercise every protocol path
//! (exit codes, retries, signals) without the real executor.
//!
//! Behaviour is steered per job through job variables (seen as `CUSTOM_ENV_*`):
//!
//! | variable | effect |
//! |---|---|
//! | `IS_BUILD_ERROR` / `IS_SYSTEM_ERROR` / `IS_UNKNOWN_ERROR` | the stage named by `FAKE_ERROR_STAGE` (default `build_script`; also `config`, `prepare`) exits 1 / 2 / 255 without running |
//! | `FAKE_EXIT_FILE` | with `IS_BUILD_ERROR`: the text written to BUILD_EXIT_CODE_FILE |
//! | `FAKE_CONFIG_OUTPUT` | `garbage`, `two_objects`, `empty`, `no_builds_dir`, `whitespace` |
//! | `FAKE_CONFIG_FAILS` / `FAKE_PREPARE_FAILS` | the first N config / prepare calls exit 2 |
//! | `FAKE_IGNORE_TERM_STAGE` | that run stage ignores SIGTERM (driver and script) |
//! | `FAKE_CLEANUP_FAILS` | cleanup exits 2 |
//! | `FAKE_CLEANUP_PRINTS` | cleanup prints the value of this variable name |
//! | `FAKE_KEEP_BUILDS` | cleanup leaves the builds dir in place (to inspect it) |
//!
//! Every call appends `<cmd> [stage]` to `<state>/calls` and dumps its environment,
//! NUL-separated, to `<state>/env-<cmd or stage>` and its cwd to `<state>/cwd-<...>`;
//! prepare copies `response.json` (and its mode) into the state dir, run copies each script
//! (and its mode) to `<state>/script-<stage>`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::runner::RunnerConfig;

const SCRIPT: &str = r#"#!/usr/bin/env bash
# Fake custom-executor driver for the runner emulator's self-tests.
set -u
cmd="${1:-}"
shift || true
state="${FAKE_STATE_DIR:?}"
stage="${2:-}"
label="$cmd"
[ "$cmd" = run ] && label="$stage"
echo "$cmd${stage:+ $stage}" >> "$state/calls"
env -0 > "$state/env-$label"
pwd > "$state/cwd-$label"

inject() {
  # Error injection for the stage named by FAKE_ERROR_STAGE.
  [ "${CUSTOM_ENV_FAKE_ERROR_STAGE:-build_script}" = "$1" ] || return 0
  if [ -n "${CUSTOM_ENV_IS_BUILD_ERROR:-}" ]; then
    if [ -n "${CUSTOM_ENV_FAKE_EXIT_FILE+x}" ]; then
      printf '%s\n' "$CUSTOM_ENV_FAKE_EXIT_FILE" > "$BUILD_EXIT_CODE_FILE"
    fi
    echo "fake-driver: injected build error in $1" >&2
    exit "$BUILD_FAILURE_EXIT_CODE"
  fi
  if [ -n "${CUSTOM_ENV_IS_SYSTEM_ERROR:-}" ]; then
    echo "fake-driver: injected system error in $1" >&2
    exit "$SYSTEM_FAILURE_EXIT_CODE"
  fi
  if [ -n "${CUSTOM_ENV_IS_UNKNOWN_ERROR:-}" ]; then
    echo "fake-driver: injected unknown error in $1" >&2
    exit 255
  fi
}

count() {
  # How many times this call has happened in this job (1-based).
  local f="$state/count-$1-${CUSTOM_ENV_CI_JOB_ID}"
  local n=0
  [ -f "$f" ] && n=$(cat "$f")
  n=$((n + 1))
  echo "$n" > "$f"
  echo "$n"
}

case "$cmd" in
  config)
    echo "fake-driver: config for job ${CUSTOM_ENV_CI_JOB_ID}" >&2
    inject config
    if [ "$(count config)" -le "${CUSTOM_ENV_FAKE_CONFIG_FAILS:-0}" ]; then
      echo "fake-driver: config failing on purpose" >&2
      exit "$SYSTEM_FAILURE_EXIT_CODE"
    fi
    builds="${FAKE_BUILDS_ROOT:?}/${CUSTOM_ENV_CI_JOB_ID}"
    case "${CUSTOM_ENV_FAKE_CONFIG_OUTPUT:-}" in
      garbage) echo "starting up..."; printf '{"builds_dir":"%s"}\n' "$builds" ;;
      two_objects) printf '{"builds_dir":"%s"}\n{"cache_dir":"x"}\n' "$builds" ;;
      empty) ;;
      whitespace) printf '  \n' ;;
      no_builds_dir) printf '{"cache_dir":"%s"}\n' "$FAKE_CACHE_DIR" ;;
      *)
        printf '{"builds_dir":"%s","cache_dir":"%s","builds_dir_is_shared":false,"hostname":"fake-host","driver":{"name":"fake-driver","version":"1.0.0"},"job_env":{"FAKE_JOB_ENV":"from-config"}}\n' \
          "$builds" "${FAKE_CACHE_DIR:?}"
        ;;
    esac
    ;;
  prepare)
    inject prepare
    if [ "$(count prepare)" -le "${CUSTOM_ENV_FAKE_PREPARE_FAILS:-0}" ]; then
      echo "fake-driver: prepare failing on purpose" >&2
      exit "$SYSTEM_FAILURE_EXIT_CODE"
    fi
    cp "$JOB_RESPONSE_FILE" "$state/response.json"
    stat -c %a "$JOB_RESPONSE_FILE" > "$state/response-mode"
    id=$(grep -o '"id":[0-9]*' "$JOB_RESPONSE_FILE" | head -n 1 | cut -d: -f2)
    echo "fake-driver: prepared job $id"
    ;;
  run)
    script="${1:?}"
    case "$stage" in
      prepare_script|get_sources|clear_worktree|restore_cache|download_artifacts|build_script|step_*|after_script|archive_cache|archive_cache_on_failure|upload_artifacts_on_success|upload_artifacts_on_failure|cleanup_file_variables) ;;
      *) echo "fake-driver: unknown stage $stage" >&2; exit "$SYSTEM_FAILURE_EXIT_CODE" ;;
    esac
    cp "$script" "$state/script-$stage"
    stat -c %a "$script" > "$state/script-mode-$stage"
    inject "$stage"
    if [ "${CUSTOM_ENV_FAKE_IGNORE_TERM_STAGE:-}" = "$stage" ]; then
      # An ignored signal stays ignored across exec and cannot be re-trapped by the
      # script, so the whole stage is deaf to SIGTERM: only SIGKILL ends it.
      trap '' TERM
      echo "fake-driver: ignoring SIGTERM in $stage" >&2
      exec bash "$script"
    fi
    # Like a well-behaved driver: note the signal, let the script (same process group,
    # it got the signal too) finish, then report its status.
    trap 'echo "fake-driver: got SIGTERM" >&2' TERM
    bash "$script" &
    child=$!
    rc=0
    while :; do
      wait "$child"
      rc=$?
      # wait returns >128 when interrupted by the trap; the child may still be running.
      kill -0 "$child" 2>/dev/null || break
    done
    if [ "$rc" -ne 0 ]; then
      printf '%s\n' "$rc" > "$BUILD_EXIT_CODE_FILE"
      exit "$BUILD_FAILURE_EXIT_CODE"
    fi
    ;;
  cleanup)
    echo "fake-driver: cleanup job ${CUSTOM_ENV_CI_JOB_ID}"
    if [ -n "${CUSTOM_ENV_FAKE_CLEANUP_PRINTS:-}" ]; then
      name="CUSTOM_ENV_${CUSTOM_ENV_FAKE_CLEANUP_PRINTS}"
      echo "fake-driver: ${CUSTOM_ENV_FAKE_CLEANUP_PRINTS}=${!name:-}"
    fi
    if [ -z "${CUSTOM_ENV_FAKE_KEEP_BUILDS:-}" ]; then
      rm -rf "${FAKE_BUILDS_ROOT:?}/${CUSTOM_ENV_CI_JOB_ID}"
    fi
    if [ -n "${CUSTOM_ENV_FAKE_CLEANUP_FAILS:-}" ]; then
      echo "fake-driver: cleanup failing on purpose" >&2
      exit "$SYSTEM_FAILURE_EXIT_CODE"
    fi
    ;;
  *)
    echo "fake-driver: unknown command $cmd" >&2
    exit "${SYSTEM_FAILURE_EXIT_CODE:-2}"
    ;;
esac
exit 0
"#;

/// The fake driver installed in a temp dir, with its state, builds and cache dirs.
#[derive(Debug)]
pub struct FakeDriver {
    dir: tempfile::TempDir,
    /// The driver script.
    pub path: PathBuf,
    /// Where the driver records calls and environments.
    pub state_dir: PathBuf,
    /// `builds_dir` is `<builds_root>/<job id>`.
    pub builds_root: PathBuf,
    /// `cache_dir`.
    pub cache_dir: PathBuf,
}

impl FakeDriver {
    /// Writes the driver into a fresh temp dir.
    pub fn new() -> Result<FakeDriver> {
        let dir = tempfile::Builder::new()
            .prefix("fake-driver")
            .tempdir()
            .map_err(|e| Error::io("creating the fake driver dir", e))?;
        let root = dir.path().to_path_buf();
        let path = root.join("driver.sh");
        let state_dir = root.join("state");
        let builds_root = root.join("builds");
        let cache_dir = root.join("cache");
        for d in [&state_dir, &builds_root, &cache_dir] {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        }
        std::fs::write(&path, SCRIPT)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(FakeDriver {
            dir,
            path,
            state_dir,
            builds_root,
            cache_dir,
        })
    }

    /// The temp dir holding everything.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A runner config wired to this driver, with test timeouts.
    pub fn runner_config(&self) -> RunnerConfig {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        RunnerConfig::for_driver(&self.path, &[])
            .with_test_timeouts()
            .with_env("FAKE_STATE_DIR", s(&self.state_dir))
            .with_env("FAKE_BUILDS_ROOT", s(&self.builds_root))
            .with_env("FAKE_CACHE_DIR", s(&self.cache_dir))
    }

    /// The calls the driver saw, in order (`config`, `prepare`, `run <stage>`, `cleanup`).
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state_dir.join("calls"))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }

    /// The environment of the last call labelled `label` (`config`, `prepare`, `cleanup` or a
    /// run stage name), in the order `env` printed it.
    pub fn env_of(&self, label: &str) -> Option<Vec<(String, String)>> {
        let bytes = std::fs::read(self.state_dir.join(format!("env-{label}"))).ok()?;
        Some(
            bytes
                .split(|b| *b == 0)
                .filter(|entry| !entry.is_empty())
                .filter_map(|entry| {
                    let text = String::from_utf8_lossy(entry);
                    let (k, v) = text.split_once('=')?;
                    Some((k.to_owned(), v.to_owned()))
                })
                .collect(),
        )
    }

    /// The working directory of the last call labelled `label`.
    pub fn cwd_of(&self, label: &str) -> Option<PathBuf> {
        std::fs::read_to_string(self.state_dir.join(format!("cwd-{label}")))
            .ok()
            .map(|s| PathBuf::from(s.trim_end()))
    }
}
