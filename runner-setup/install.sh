#!/usr/bin/env bash
# Installs sagemaker-executor on a gitlab-runner host: the binaries (sagemaker-executor and the
# small sagemaker-executor-run beside it, the runner's config_exec and run_exec), a config dir,
# the per-job directories owned by the runner's user, and a check of the config. Every
# prerequisite is checked before anything is touched, and a config that does not validate
# stops the install with its problems on the screen.
#
#   sudo runner-setup/install.sh [--register] [path/to/sagemaker-executor] [runner user]
#
# It then prints the `gitlab-runner register` commands for a SageMaker runner and a Fargate
# runner (matching config.toml.example); with --register it runs them, reading GITLAB_URL,
# SAGEMAKER_RUNNER_TOKEN and FARGATE_RUNNER_TOKEN from the environment.
#
# Where things go can be moved for a staged install or a test (defaults in brackets):
#   SME_PREFIX [/usr/local]  SME_ETC [/etc/sagemaker-executor]  SME_VAR [/var/lib/sagemaker-executor]
set -euo pipefail

register=false
if [ "${1:-}" = "--register" ]; then
    register=true
    shift
fi
bin="${1:-target/release/sagemaker-executor}"
user="${2:-gitlab-runner}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prefix="${SME_PREFIX:-/usr/local}"
etc="${SME_ETC:-/etc/sagemaker-executor}"
var="${SME_VAR:-/var/lib/sagemaker-executor}"
installed="$prefix/bin/sagemaker-executor"
run_bin="$(dirname "$bin")/sagemaker-executor-run"
installed_run="$prefix/bin/sagemaker-executor-run"
config="$etc/config.toml"

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

# --- prerequisites: nothing is changed until all of them hold -------------------------------
[ "$(id -u)" = 0 ] || fail "run as root (it installs into $prefix and $etc and chowns $var)"
[ -f "$bin" ] && [ -x "$bin" ] || fail "no executable at $bin: build it first (cargo build --release)"
version="$("$bin" --version 2>/dev/null)" || fail "$bin does not run on this host"
[ -f "$run_bin" ] && [ -x "$run_bin" ] || fail "no executable at $run_bin: it is built with $bin (cargo build --release)"
id "$user" >/dev/null 2>&1 || fail "the runner user '$user' does not exist (install gitlab-runner first, or name its user as the second argument)"
group="$(id -gn "$user")"
if $register; then
    command -v gitlab-runner >/dev/null || fail "--register needs gitlab-runner on PATH"
    for v in GITLAB_URL SAGEMAKER_RUNNER_TOKEN FARGATE_RUNNER_TOKEN; do
        [ -n "${!v:-}" ] || fail "--register needs $v in the environment"
    done
fi
if [ -f "$config" ]; then
    # An existing config must be valid before the new binary replaces the old one.
    if ! problems="$("$bin" --config "$config" validate 2>&1)"; then
        printf '%s\n' "$problems" >&2
        fail "$config does not validate with $version; fix it, then run install.sh again"
    fi
fi

# --- install ---------------------------------------------------------------------------------
install -d -m 0755 "$prefix/bin" "$etc"
install -m 0755 "$bin" "$installed"
install -m 0755 "$run_bin" "$installed_run"
new_config=false
if [ ! -f "$config" ]; then
    install -m 0640 -g "$group" "$here/sagemaker-executor.toml" "$config"
    new_config=true
fi
install -d -m 0750 -o "$user" -g "$group" "$var" "$var/builds" "$var/cache"
echo "installed $version as $installed"

if ! problems="$("$installed" --config "$config" validate 2>&1)"; then
    printf '%s\n' "$problems" >&2
    fail "$config does not validate; fix what is listed above"
fi
if $new_config; then
    echo "$config is the example config: edit it for your account (the CloudFormation stack's outputs"
    echo "give every value, see runner-setup/cloudformation/README.md), then check it against AWS:"
    echo "  $installed --config $config validate && $installed --config $config doctor"
fi

# --- runner registration ---------------------------------------------------------------------
register_command() { # name config-file token-variable
    local args=(gitlab-runner register --non-interactive --url "\${GITLAB_URL}" --token "\${$3}"
        --executor custom --description "$1")
    local stage exec
    for stage in config prepare run cleanup; do
        exec="$installed"
        case "$stage" in config | run) exec="$installed_run" ;; esac
        args+=(--custom-"$stage"-exec "$exec"
            --custom-"$stage"-args --config --custom-"$stage"-args "$2" --custom-"$stage"-args "$stage")
    done
    printf '%s\n' "${args[*]}"
}
sagemaker_cmd="$(register_command sagemaker "$config" SAGEMAKER_RUNNER_TOKEN)"
fargate_cmd="$(register_command fargate "$etc/fargate.toml" FARGATE_RUNNER_TOKEN)"
if $register; then
    eval "$sagemaker_cmd"
    eval "$fargate_cmd"
    echo "registered; set graceful_kill_timeout and cleanup_exec_timeout as config.toml.example shows"
else
    echo
    echo "Register the runners (tags are set on the runner in GitLab when creating its token):"
    echo "  $sagemaker_cmd"
    echo "  $fargate_cmd"
    echo "(a fargate runner uses its own config, $etc/fargate.toml, with default_action = \"fargate\")"
    echo "then set graceful_kill_timeout and cleanup_exec_timeout in config.toml as config.toml.example shows."
fi
