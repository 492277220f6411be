#!/bin/sh
# sagemaker-executor bootstrap: runs one CI stage script inside a SageMaker training container
# or an ECS task.
#
#   sh bootstrap.sh <channel dir>
#
# The channel dir holds workspace.tar.gz (the job's project dir and its .tmp sibling, member
# names = absolute paths without the leading '/'), script (the runner's stage script), this file
# and job.env. Steps: restore the workspace at the same absolute path, run the script from the
# project dir, pack the workspace back, exit with the script's status.
#
# Portability: POSIX sh only (dash and busybox ash included), and only sh, tar and gzip (GNU or
# busybox) are required; ls is used for byte counts when present.
#
# Why things are done the way they are:
# - job.env is parsed line by line and never sourced, so its values cannot run code.
# - tar -o (GNU: --no-same-owner, busybox: don't restore user:group) because a root tar would
#   otherwise give the files to whatever uid the archive names.
# - The script runs in the background and the shell waits for it, because a shell only runs a
#   trap between commands: this is what lets SIGTERM (StopTrainingJob, ECS StopTask) be
#   forwarded while the script runs. When this shell leads its process group (as PID 1 of a
#   container does) the signal goes to the whole group, so the script's own children get it
#   too; dash and busybox cannot start a job in a group of its own without a terminal.
# - After a SIGTERM the workspace is still packed (SageMaker uploads the output dir after the
#   container exits), then the exit status is 143.
# - SageMaker gzips /opt/ml/output/data itself, so the SageMaker mode writes an uncompressed
#   workspace.tar; the ECS mode writes workspace.tar.gz for the helper container to upload.

set -u
set -f

say() {
    printf '[sagemaker-executor] %s\n' "$*"
}

# Our own variables must not reach the script through the environment.
unset SME_PROJECT_DIR SME_MODE SME_OUTPUT_DIR SME_FAILURE_FILE
SME_PROJECT_DIR=
SME_MODE=sagemaker
SME_OUTPUT_DIR=
SME_FAILURE_FILE=

write_failure() {
    [ -n "$SME_FAILURE_FILE" ] || return 0
    failure_dir=${SME_FAILURE_FILE%/*}
    if [ -n "$failure_dir" ]; then
        mkdir -p "$failure_dir" 2>/dev/null
    fi
    printf 'sagemaker-executor: %s\n' "$1" >"$SME_FAILURE_FILE" ||
        say "cannot write the failure reason to $SME_FAILURE_FILE"
}

die() {
    say "error: $1"
    write_failure "$1"
    exit 1
}

size_of() {
    if command -v ls >/dev/null 2>&1; then
        # shellcheck disable=SC2046 # word splitting is the point; globbing is off (set -f)
        set -- $(ls -ln "$1" 2>/dev/null)
        if [ $# -ge 5 ]; then
            printf '%s bytes' "$5"
            return 0
        fi
    fi
    printf 'size unknown'
}

channel=${1:-}
[ -n "$channel" ] || die "usage: bootstrap.sh <channel dir>"
channel=${channel%/}
[ -r "$channel/job.env" ] || die "$channel/job.env is missing"

while IFS= read -r line || [ -n "$line" ]; do
    case $line in
        SME_PROJECT_DIR=*) SME_PROJECT_DIR=${line#*=} ;;
        SME_MODE=*) SME_MODE=${line#*=} ;;
        SME_OUTPUT_DIR=*) SME_OUTPUT_DIR=${line#*=} ;;
        SME_FAILURE_FILE=*) SME_FAILURE_FILE=${line#*=} ;;
        *) ;; # blank lines, comments, keys of newer executors
    esac
done <"$channel/job.env"

case $SME_MODE in
    sagemaker)
        : "${SME_OUTPUT_DIR:=/opt/ml/output/data}"
        : "${SME_FAILURE_FILE:=/opt/ml/output/failure}"
        returned=workspace.tar
        ;;
    ecs)
        returned=workspace.tar.gz
        ;;
    *)
        die "unknown SME_MODE '$SME_MODE' in job.env"
        ;;
esac
[ -n "$SME_OUTPUT_DIR" ] || die "SME_OUTPUT_DIR is not set in job.env"

SME_PROJECT_DIR=${SME_PROJECT_DIR%/}
case $SME_PROJECT_DIR in
    /?*) ;;
    *) die "SME_PROJECT_DIR '$SME_PROJECT_DIR' is not an absolute path below /" ;;
esac
case $SME_PROJECT_DIR/ in
    */../* | */./*) die "SME_PROJECT_DIR '$SME_PROJECT_DIR' contains . or .. components" ;;
esac
project_member=${SME_PROJECT_DIR#/}

# --- SIGTERM handling -------------------------------------------------------------------------
leader=0
if [ -r "/proc/$$/stat" ]; then
    stat_line=
    read -r stat_line <"/proc/$$/stat" || true
    # Fields after "pid (comm) " are: state ppid pgrp ...; comm may contain spaces.
    # shellcheck disable=SC2086 # word splitting is the point; globbing is off (set -f)
    set -- ${stat_line##*) }
    if [ "${3:-}" = "$$" ]; then
        leader=1
    fi
fi

terminated=0
child=

forward_term() {
    if [ "$leader" = 1 ]; then
        # Our whole process group: the script and everything it started. We ignore it ourselves.
        kill -s TERM 0 2>/dev/null
    else
        kill -s TERM "$child" 2>/dev/null
    fi
}

# shellcheck disable=SC2317 # called through the trap below
on_term() {
    terminated=1
    trap '' TERM
    say "SIGTERM received: stopping the script"
    if [ -n "$child" ]; then
        forward_term
    fi
}
trap on_term TERM

# --- restore ----------------------------------------------------------------------------------
archive=$channel/workspace.tar.gz
[ -f "$archive" ] || die "restoring the workspace failed: $archive is missing"
say "restoring the workspace into $SME_PROJECT_DIR from $archive ($(size_of "$archive"))"
tar -xzof "$archive" -C / || die "restoring the workspace failed (tar exited with status $?)"
if [ ! -d "$SME_PROJECT_DIR" ]; then
    mkdir -p "$SME_PROJECT_DIR" || die "cannot create $SME_PROJECT_DIR"
fi
say "restored the workspace"

# --- run --------------------------------------------------------------------------------------
script=$channel/script
[ -f "$script" ] || die "the stage script $script is missing"
if command -v bash >/dev/null 2>&1; then
    shell='bash'
else
    shell='sh'
    say "bash is not installed: running the script with sh"
fi
cd "$SME_PROJECT_DIR" || die "cannot enter $SME_PROJECT_DIR"

status=0
if [ "$terminated" = 1 ]; then
    say "stopped before the script started"
    write_failure "the job was stopped (SIGTERM) before the script started"
    exit 143
fi
say "running the script with $shell in $SME_PROJECT_DIR"
"$shell" "$script" &
child=$!
# A SIGTERM that came between the check above and the start of the script.
if [ "$terminated" = 1 ]; then
    forward_term
fi
while :; do
    wait "$child"
    status=$?
    # wait also returns (with 128+n) when a trapped signal arrives; the script may still run.
    if kill -0 "$child" 2>/dev/null; then
        continue
    fi
    break
done
# From here on, finish packing whatever happens: the platform kills us after its grace period.
trap '' TERM
if [ "$terminated" = 1 ]; then
    say "the script ended after SIGTERM (status $status)"
else
    say "the script exited with status $status"
fi

# --- pack -------------------------------------------------------------------------------------
set --
if [ -e "$SME_PROJECT_DIR" ]; then
    set -- "$project_member"
fi
if [ -e "$SME_PROJECT_DIR.tmp" ]; then
    set -- "$@" "$project_member.tmp"
fi
pack_status=0
output=$SME_OUTPUT_DIR/$returned
if [ $# -eq 0 ]; then
    say "nothing to pack: $SME_PROJECT_DIR no longer exists"
elif ! mkdir -p "$SME_OUTPUT_DIR"; then
    pack_status=1
    say "packing the workspace failed: cannot create $SME_OUTPUT_DIR"
else
    cd / || true
    case $returned in
        *.gz) tar -czf "$output" -C / "$@" ;;
        *) tar -cf "$output" -C / "$@" ;;
    esac
    pack_status=$?
    if [ "$pack_status" -eq 0 ]; then
        say "packed the workspace into $output ($(size_of "$output"))"
    else
        say "packing the workspace failed (tar exited with status $pack_status)"
    fi
fi

# --- exit status ------------------------------------------------------------------------------
if [ "$terminated" = 1 ]; then
    write_failure "the job was stopped (SIGTERM) while the script was running"
    exit 143
fi
if [ "$status" -ne 0 ]; then
    write_failure "script exited with status $status"
    exit "$status"
fi
if [ "$pack_status" -ne 0 ]; then
    # The script succeeded but its artifacts would silently be missing: fail loudly instead.
    write_failure "packing the workspace failed (tar exited with status $pack_status)"
    exit 1
fi
exit 0
