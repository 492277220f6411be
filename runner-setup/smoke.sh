#!/usr/bin/env bash
# Smoke test of an installed sagemaker-executor against the AWS account its config points at.
#
#   runner-setup/smoke.sh [--yes] [--config FILE] [options]     (--help lists the options)
#
# It drives the installed binary through the custom-executor protocol exactly as gitlab-runner
# does (JOB_RESPONSE_FILE, CUSTOM_ENV_* variables, config -> prepare -> run <script> <stage> ->
# cleanup, stage scripts in the runner's bash layout), one job at a time, each job receiving the
# sagemaker.env of the job before it as GitLab's `needs:` would hand it over:
#
#   1. train     a SageMaker training job, 1 x ml.m5.large, SAGEMAKER_MAX_RUNTIME 60s
#   2. fargate   an ECS Fargate task (0.25 vCPU, 0.5 GB) that runs two shell commands
#   3. register  the trained model as a version in a Model Registry group
#   4. deploy    that version to a serverless endpoint, answered once by the smoke request
#   5. undeploy  the endpoint, its endpoint config and model
#
# then deletes the registry version (and the group when this run created it) and the model
# archive, checks that nothing it created is left (endpoint, model, endpoint config, registry
# version, model archive, staged workspaces; `sagemaker-executor gc --dry-run` for running
# training jobs and tasks), and prints what the run cost, computed from what AWS reports (the
# training job's billable seconds from the executor's log, the task's billed seconds from ECS,
# the serverless invocation bounded by its 60 s limit) at the rates in the table below.
#
# Without --yes it only prints what it would create. Ctrl-C, a failed job or the overall
# --timeout stops the current call the way gitlab-runner does (SIGTERM to it, SIGKILL after a
# grace period), runs the executor's `cleanup` for every job that started, tears the endpoint
# down and deletes what the run registered and stored; a second Ctrl-C during that teardown
# gives up and prints what may be left.
#
# Needs: bash, the AWS CLI (v1 or v2, with the credentials the executor uses), GNU coreutils
# (timeout, date), awk, and the executor config's policy allowing these jobs (README.md,
# "Smoke test on a real account"). Run it as the runner's user, so the executor's per-job files
# get the owner the runner needs: sudo -u gitlab-runner runner-setup/smoke.sh --yes

# Job scripts and stage-script bodies are written in single quotes on purpose: they expand in
# the job's shell, not here. on_signal runs from traps, which shellcheck does not follow.
# shellcheck disable=SC2016,SC2317
set -uo pipefail

# --- rates: on-demand list prices in us-east-1, USD, taken 2025-06 ---------------------------
# Other regions differ (often by 10-30 %); see aws.amazon.com/sagemaker/pricing and
# aws.amazon.com/fargate/pricing. The printed cost is an estimate from these figures.
train_rate() { # USD per instance-hour of SageMaker training
    case "$1" in
        ml.m5.large) echo 0.115 ;;
        ml.m5.xlarge) echo 0.23 ;;
        ml.m5.2xlarge) echo 0.461 ;;
        ml.c5.xlarge) echo 0.204 ;;
        ml.c5.2xlarge) echo 0.408 ;;
        ml.m4.xlarge) echo 0.24 ;;
        ml.g4dn.xlarge) echo 0.7364 ;;
        ml.g5.xlarge) echo 1.408 ;;
        *) echo "" ;;
    esac
}
fargate_vcpu_hour=0.04048      # Linux/x86_64 per vCPU-hour (ARM: 0.03238)
fargate_gb_hour=0.004445       # Linux/x86_64 per GB-hour (ARM: 0.00356)
fargate_minimum_seconds=60     # Fargate bills at least one minute per task
serverless_gb_second=0.00002   # serverless inference per GB-second of inference time
serverless_gb_data=0.016       # serverless inference per GB of request and response data
serverless_max_seconds=60      # an invocation is cut off after 60 s: the bound used for it

# --- AWS-published images: the SageMaker XGBoost image trains and serves ---------------------
# Account ids of the sagemaker-xgboost repository per region (SageMaker's "Docker registry
# paths" documentation); another region needs --train-image (and --serve-image).
xgboost_account() {
    case "$1" in
        us-east-1) echo 683313688378 ;;
        us-east-2) echo 257758044811 ;;
        us-west-1) echo 746614075791 ;;
        us-west-2) echo 246618743249 ;;
        ca-central-1) echo 341280168497 ;;
        eu-west-1) echo 141502667606 ;;
        eu-west-2) echo 764974769150 ;;
        eu-west-3) echo 659782779980 ;;
        eu-central-1) echo 492215442770 ;;
        eu-north-1) echo 662702820516 ;;
        ap-northeast-1) echo 354813040037 ;;
        ap-northeast-2) echo 366743142698 ;;
        ap-southeast-1) echo 121021644041 ;;
        ap-southeast-2) echo 783357654285 ;;
        ap-south-1) echo 720646828776 ;;
        sa-east-1) echo 737474898029 ;;
        *) echo "" ;;
    esac
}

usage() {
    cat <<'EOF'
usage: runner-setup/smoke.sh [--yes] [options]

  --yes                     create the resources (without it: print what would be created)
  --config FILE             the executor config [${SME_ETC:-/etc/sagemaker-executor}/config.toml]
  --executor FILE           the executor binary [sagemaker-executor on PATH, else
                            ${SME_PREFIX:-/usr/local}/bin/sagemaker-executor]
  --timeout SECONDS         bound for the five jobs [1800]; teardown gets --teardown-timeout
  --teardown-timeout SECONDS  bound for cleanup, undeploy and deletions [900]
  --train-image URI         training image [the region's SageMaker XGBoost 1.7-1 image]
  --train-instance-type T   [ml.m5.large]
  --train-script FILE       shell lines the training job runs; they must leave the model in
                            $SM_MODEL_DIR [a tiny XGBoost model, for the default image]
  --serve-image URI         inference image of the registered version [--train-image]
  --smoke-body TEXT         the request the deploy job sends [1.0]
  --smoke-content-type T    its content type [text/csv]
  --fargate-image URI       the Fargate task's image; needs sh, tar and gzip
                            [public.ecr.aws/docker/library/alpine:3.20]
  --group NAME              model package group (created if missing) [sagemaker-smoke]
  --endpoint-prefix NAME    the endpoint is <NAME>-<run id> [sagemaker-smoke]
  --serverless-memory MB    [2048]
  --project-id N            GitLab project id the jobs carry in their tags [1]
  --work-dir DIR            where job logs and files go [a new temp dir, kept on failure]
EOF
}

# --- options ----------------------------------------------------------------------------------
yes=false
config="${SME_ETC:-/etc/sagemaker-executor}/config.toml"
executor="$(command -v sagemaker-executor 2>/dev/null || echo "${SME_PREFIX:-/usr/local}/bin/sagemaker-executor")"
timeout_s=1800
teardown_s=900
train_image=""
instance_type=ml.m5.large
train_script_file=""
serve_image=""
smoke_body="1.0"
smoke_type="text/csv"
fargate_image="public.ecr.aws/docker/library/alpine:3.20"
group="sagemaker-smoke"
endpoint_prefix="sagemaker-smoke"
serverless_mb=2048
project_id=1
work=""

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        echo "smoke.sh: $1 needs a value" >&2
        exit 2
    fi
}
while [ $# -gt 0 ]; do
    case "$1" in
        --yes) yes=true; shift; continue ;;
        -h | --help) usage; exit 0 ;;
    esac
    need_value "$@"
    case "$1" in
        --config) config="$2" ;;
        --executor) executor="$2" ;;
        --timeout) timeout_s="$2" ;;
        --teardown-timeout) teardown_s="$2" ;;
        --train-image) train_image="$2" ;;
        --train-instance-type) instance_type="$2" ;;
        --train-script) train_script_file="$2" ;;
        --serve-image) serve_image="$2" ;;
        --smoke-body) smoke_body="$2" ;;
        --smoke-content-type) smoke_type="$2" ;;
        --fargate-image) fargate_image="$2" ;;
        --group) group="$2" ;;
        --endpoint-prefix) endpoint_prefix="$2" ;;
        --serverless-memory) serverless_mb="$2" ;;
        --project-id) project_id="$2" ;;
        --work-dir) work="$2" ;;
        *) echo "smoke.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift 2
done
for n in "$timeout_s" "$teardown_s" "$serverless_mb" "$project_id"; do
    case "$n" in '' | *[!0-9]*) echo "smoke.sh: $n is not a whole number" >&2; exit 2 ;; esac
done

say() { printf 'smoke: %s\n' "$*"; }
fail() { printf 'smoke: %s\n' "$*" >&2; exit 1; }

# --- prerequisites: nothing is created until all of them hold ---------------------------------
for tool in aws timeout date awk mktemp mkfifo; do
    command -v "$tool" >/dev/null 2>&1 || fail "needs $tool on PATH"
done
[ -f "$config" ] || fail "no executor config at $config (--config)"
[ -x "$executor" ] || fail "no executable executor at $executor (--executor)"
if ! problems="$("$executor" --config "$config" validate 2>&1)"; then
    printf '%s\n' "$problems" >&2
    fail "$config does not validate"
fi

# A key of one TOML table of the config (plain `key = "value"` or `key = value` lines).
toml_get() { # table key
    awk -v table="[$1]" -v key="$2" '
        /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); section = $0; next }
        section == table {
            line = $0; sub(/#.*/, "", line)
            if (line ~ "^[[:space:]]*" key "[[:space:]]*=") {
                sub(/^[^=]*=[[:space:]]*/, "", line); sub(/[[:space:]]*$/, "", line)
                gsub(/^"|"$/, "", line); print line; exit
            }
        }' "$config"
}
region="$(toml_get "" region)"
[ -z "$region" ] && region="$(awk -F'"' '/^[[:space:]]*region[[:space:]]*=/{print $2; exit}' "$config")"
[ -n "$region" ] || fail "$config names no region"
bucket="$(toml_get staging bucket)"
staging_prefix="$(toml_get staging prefix)"
staging_prefix="${staging_prefix:-sagemaker-executor}"
output_path="$(toml_get train output_path)"
output_path="${output_path:-s3://$bucket/$staging_prefix/output}"
output_path="${output_path%/}"
builds_root="$(toml_get paths builds_root)"
export AWS_REGION="$region" AWS_DEFAULT_REGION="$region"

if [ "$(id -u)" = 0 ] && [ -n "$builds_root" ] && [ -d "$builds_root" ]; then
    owner="$(stat -c %U "$builds_root" 2>/dev/null || echo root)"
    [ "$owner" = root ] || fail "run as the runner's user, not root (files root creates under $builds_root would lock it out): sudo -u $owner $0 $*"
fi

if [ -z "$train_image" ]; then
    account="$(xgboost_account "$region")"
    [ -n "$account" ] || fail "no default training image known for $region: pass --train-image (and --serve-image)"
    train_image="$account.dkr.ecr.$region.amazonaws.com/sagemaker-xgboost:1.7-1"
fi
serve_image="${serve_image:-$train_image}"
if [ -n "$train_script_file" ]; then
    [ -f "$train_script_file" ] || fail "no training script at $train_script_file"
    mapfile -t train_script <"$train_script_file"
else
    # One boosting round on two rows: a real XGBoost model, which the same image serves.
    train_script=(
        'echo "training on $SM_CURRENT_HOST"'
        "python3 -c 'import os, numpy, xgboost; d = xgboost.DMatrix(numpy.array([[0.0], [1.0]]), label=[0.0, 1.0]); xgboost.train({\"objective\": \"reg:squarederror\"}, d, 1).save_model(os.path.join(os.environ[\"SM_MODEL_DIR\"], \"xgboost-model\"))'"
        'ls -l "$SM_MODEL_DIR"'
    )
fi
[ "$(train_rate "$instance_type")" != "" ] || say "note: no rate for $instance_type in the table; its cost is not counted"

identity="$(aws sts get-caller-identity --query Account --output text 2>&1)" ||
    fail "the AWS CLI cannot reach the account: $identity"

run_id="$(date +%s)"
pipeline_id="$run_id"
sha="$(printf '%040d' "$run_id")"
endpoint="$endpoint_prefix-$run_id"
job_id() { echo "$((run_id * 10 + $1))"; }
train_job_name="gl-$project_id-$(job_id 1)"
# The training job writes below <output path>/<project>/<job>/<the run's random part>/.
train_output="$output_path/$project_id/$(job_id 1)"

# --- the plan ---------------------------------------------------------------------------------
cat <<EOF
smoke: account $identity, region $region, executor $executor, config $config
smoke: run $run_id will create, one after the other (the jobs are GitLab jobs $(job_id 1)..$(job_id 5) of project $project_id):
  1. SageMaker training job $train_job_name: 1 x $instance_type, image $train_image, max runtime 60 s
     (its workspace is staged in s3://$bucket/$staging_prefix/ and the model written under $train_output/)
  2. ECS Fargate task: image $fargate_image, the config's [fargate] cluster and size
  3. a version in model package group $group (the group too, if missing), image $serve_image
  4. serverless endpoint $endpoint ($serverless_mb MB, 1 concurrent), its endpoint config and model; one InvokeEndpoint
  5. the teardown of that endpoint, config and model
  then it deletes the registry version (and a group it created) and the model archive.
smoke: expected: about 10-15 minutes on AWS, a cost of about \$0.01 (printed at the end); bounded by --timeout ${timeout_s}s plus --teardown-timeout ${teardown_s}s
smoke: kept: the training job's record (SageMaker cannot delete those), CloudWatch log streams, the Fargate task definition (reused by later jobs)
EOF
if ! $yes; then
    say "nothing created: re-run with --yes to run it"
    exit 2
fi

# --- the work dir and the signal handling -----------------------------------------------------
own_work=false
if [ -z "$work" ]; then
    work="$(mktemp -d "${TMPDIR:-/tmp}/sagemaker-smoke.XXXXXX")" || fail "cannot create a work dir"
    own_work=true
fi
mkdir -p "$work/artifacts" || fail "cannot use $work"
# The upload stage runs as the executor's [local] user when one is configured: it may pass
# through the work dir and drop files into artifacts/ (as GitLab's artifact upload would take
# them), but read nothing else here.
if ! chmod 0711 "$work" || ! chmod 1733 "$work/artifacts"; then
    fail "cannot set the modes of $work"
fi
say "work dir: $work (job logs, response files, returned dotenv files)"

current_pid=""     # the exec call running now (a `timeout` process leading its group)
signals=0
phase="jobs"       # jobs, teardown, finished
stop_reason=""
on_signal() {
    signals=$((signals + 1))
    if [ "$phase" = teardown ] && [ "$signals" -ge 2 ]; then
        say "interrupted again during the teardown: giving up; what may be left:"
        report_leftovers || true
        phase="finished"
        exit 130
    fi
    stop_reason="${stop_reason:-interrupted by $1}"
    if [ -n "$current_pid" ]; then
        kill -TERM "$current_pid" 2>/dev/null || true
    fi
}
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM
trap 'on_signal SIGHUP' HUP
# A bug in this script must still not leave a running endpoint behind.
trap 'if [ "$phase" = jobs ]; then teardown; fi' EXIT

deadline=$(($(date +%s) + timeout_s))
remaining() { echo $((deadline - $(date +%s))); }

# Runs one exec call like gitlab-runner (protocol §4, §6): cwd and TMPDIR the job's temp dir,
# stdin /dev/null, its own process group (timeout leads it), SIGTERM at the deadline or on
# Ctrl-C and SIGKILL 60 s later. Output goes live to the terminal and into $log; with $capture
# set, stdout goes there instead (the config stage's JSON). Returns the call's exit status.
exec_call() { # tmp log capture args...
    local tmp="$1" log="$2" capture="$3" left fifo reader rc
    shift 3
    left="$(remaining)"
    if [ "$left" -le 0 ]; then
        stop_reason="${stop_reason:-the overall timeout (${timeout_s}s) passed}"
        return 124
    fi
    fifo="$tmp/output.fifo"
    rm -f "$fifo"
    if ! mkfifo "$fifo"; then return 1; fi
    tee -a "$log" <"$fifo" | awk '{ print "  | " $0; fflush() }' &
    reader=$!
    if [ -n "$capture" ]; then
        (cd "$tmp" && exec timeout -k 60 "$left" env "${call_env[@]}" "$@" <"/dev/null" >"$capture" 2>"$fifo") &
    else
        (cd "$tmp" && exec timeout -k 60 "$left" env "${call_env[@]}" "$@" <"/dev/null" >"$fifo" 2>&1) &
    fi
    current_pid=$!
    # `wait` returns early when a trapped signal arrives; the handler has sent SIGTERM, so wait
    # again until the call has really ended.
    while :; do
        wait "$current_pid"
        rc=$?
        kill -0 "$current_pid" 2>/dev/null || break
    done
    current_pid=""
    wait "$reader" 2>/dev/null
    rm -f "$fifo"
    if [ "$rc" = 124 ] && [ "$(remaining)" -le 0 ]; then
        stop_reason="${stop_reason:-the overall timeout (${timeout_s}s) passed}"
    fi
    return "$rc"
}

json_str() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    s="${s//$'\n'/\\n}"
    s="${s//$'\r'/\\r}"
    s="${s//$'\t'/\\t}"
    printf '"%s"' "$s"
}
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# The runner's bash stage-script layout (protocol §8) around BODY.
write_stage_script() { # file body
    {
        printf '#!/usr/bin/env bash\n\ntrap %s TERM\n\n' "'exit 1'"
        printf 'set -o pipefail\nset -o errexit\nset +o noclobber\n'
        printf '( trap %s TERM; eval %s ) < /dev/null\nexit 0\n' "'exit 1'" "$(sq "$2")"
    } >"$1"
    chmod 0700 "$1"
}

# One job, as gitlab-runner runs it. Inputs (globals): job_vars (KEY=VALUE: the job's variables,
# upstream dotenv first), job_script (its script lines), job_files (path=content in the
# repository). The job's sagemaker.env comes back as $work/artifacts/<n>.env ("uploaded").
# Sets job_status: success, failed, system_failure, canceled or timedout.
declare -a job_vars=() job_script=() job_files=() call_env=() started_jobs=()
job_status=""
run_job() { # n name image
    local n="$1" name="$2" image="$3" id tmp log vars_json steps_json kv key value first
    local -a gitlab_vars=() runner_vars=()
    id="$(job_id "$n")"
    tmp="$work/job-$n"
    log="$work/job-$n.log"
    mkdir -p "$tmp" && chmod 0700 "$tmp" || return 1
    : >"$log"
    say "job $n/5 $name (GitLab job $id): log $log"
    local project_path="sagemaker-executor/smoke-test"
    gitlab_vars=(
        "CI_JOB_ID=$id" "CI_JOB_URL=https://gitlab.invalid/$project_path/-/jobs/$id"
        "CI_JOB_NAME=$name" "CI_JOB_STAGE=smoke" "CI_PIPELINE_ID=$pipeline_id"
        "CI_PIPELINE_SOURCE=push" "CI_PROJECT_ID=$project_id" "CI_PROJECT_PATH=$project_path"
        "CI_PROJECT_NAME=smoke-test" "CI_PROJECT_NAMESPACE=sagemaker-executor"
        "CI_PROJECT_URL=https://gitlab.invalid/$project_path" "CI_COMMIT_SHA=$sha"
        "CI_COMMIT_SHORT_SHA=${sha:0:8}" "CI_COMMIT_REF_NAME=sagemaker-smoke"
        "CI_COMMIT_REF_SLUG=sagemaker-smoke" "CI_COMMIT_BRANCH=sagemaker-smoke"
        "CI_COMMIT_REF_PROTECTED=true" "CI_DEFAULT_BRANCH=main"
        "CI_SERVER_URL=https://gitlab.invalid" "GITLAB_CI=true" "CI=true"
        "${job_vars[@]}"
    )
    # The response file (protocol §10): GitLab's payload, written 0600.
    vars_json="" first=true
    for kv in "CI_JOB_TOKEN=smoke-$run_id-$n" "${gitlab_vars[@]}"; do
        key="${kv%%=*}" value="${kv#*=}"
        $first || vars_json+=","
        first=false
        vars_json+="{\"key\":$(json_str "$key"),\"value\":$(json_str "$value"),\"public\":true,\"file\":false,\"masked\":false,\"raw\":true}"
    done
    steps_json="" first=true
    for value in "${job_script[@]}"; do
        $first || steps_json+=","
        first=false
        steps_json+="$(json_str "$value")"
    done
    (
        umask 077
        cat >"$tmp/response.json" <<EOF
{"id":$id,"token":"smoke-$run_id-$n","allow_git_fetch":false,
"job_info":{"id":$id,"name":$(json_str "$name"),"stage":"smoke","pipeline_id":$pipeline_id,"project_id":$project_id,"project_name":"smoke-test","project_full_path":"$project_path"},
"git_info":{"repo_url":"https://gitlab.invalid/$project_path.git","repo_object_format":"sha1","ref":"sagemaker-smoke","sha":"$sha","before_sha":"0000000000000000000000000000000000000000","ref_type":"branch","refspecs":[],"depth":1,"protected":true},
"runner_info":{"timeout":$timeout_s},
"variables":[$vars_json],
"steps":[{"name":"script","script":[$steps_json],"timeout":$timeout_s,"when":"on_success","allow_failure":false}],
"image":{"name":$(json_str "$image"),"entrypoint":[]},"services":[],
"artifacts":[{"name":"","untracked":false,"paths":["sagemaker.env"],"exclude":[],"when":"always","artifact_type":"dotenv","artifact_format":"gzip","expire_in":""}],
"cache":[],"credentials":[],"dependencies":[],"hooks":[],"features":{"trace_sections":true}}
EOF
    ) || return 1
    started_jobs+=("$n")

    # The protocol environment (§4); the project dirs are empty until config_exec answered.
    local builds_dir="" project_dir="" status=running
    set_env() {
        runner_vars=(
            "CI_RUNNER_SHORT_TOKEN=smoketst" "CI_RUNNER_VERSION=19.4.0" "CI_RUNNER_REVISION=smoke"
            "CI_RUNNER_EXECUTABLE_ARCH=linux/amd64" "CI_BUILDS_DIR=$builds_dir"
            "CI_PROJECT_DIR=$project_dir" "CI_CONCURRENT_ID=0" "CI_CONCURRENT_PROJECT_ID=0"
            "CI_SERVER=yes" "CI_SHARED_ENVIRONMENT=true" "CI_JOB_STATUS=$status"
            "CI_JOB_TIMEOUT=$timeout_s" "CI_JOB_IMAGE=$image"
            "RUNNER_TEMP_PROJECT_DIR=${project_dir:+$project_dir.tmp}"
        )
        call_env=(
            "TMPDIR=$tmp" "BUILD_FAILURE_EXIT_CODE=1" "SYSTEM_FAILURE_EXIT_CODE=2"
            "BUILD_EXIT_CODE_FILE=$tmp/build_exit_code" "JOB_RESPONSE_FILE=$tmp/response.json"
        )
        for kv in "${runner_vars[@]}" "CI_JOB_TOKEN=smoke-$run_id-$n" "${gitlab_vars[@]}"; do
            call_env+=("CUSTOM_ENV_$kv")
        done
        call_env+=("CUSTOM_ENV_CI_JOB_SERVICES=")
        # cleanup_job may run later, from the teardown, with this job's environment.
        printf '%s\0' "${call_env[@]}" >"$tmp/env"
    }
    set_env
    local rc out
    job_status=""
    exec_call "$tmp" "$log" "$tmp/config.json" "$executor" --config "$config" config
    rc=$?
    if [ "$rc" = 0 ]; then
        out="$(cat "$tmp/config.json")"
        builds_dir="$(printf '%s' "$out" | sed -n 's/.*"builds_dir":"\([^"]*\)".*/\1/p')"
        [ -n "$builds_dir" ] || { echo "config stage printed no builds_dir: $out" >>"$log"; rc=2; }
    fi
    if [ "$rc" = 0 ]; then
        project_dir="$builds_dir/$project_path"
        set_env
        exec_call "$tmp" "$log" "" "$executor" --config "$config" prepare
        rc=$?
    fi
    # The run stages (§8); a failure skips the rest but the artifacts upload on failure.
    local stage body prelude="" seq=0
    for kv in "${runner_vars[@]}" "CI_JOB_TOKEN=smoke-$run_id-$n" "${gitlab_vars[@]}"; do
        prelude+="export ${kv%%=*}=$(sq "${kv#*=}")"$'\n'
    done
    prelude+='mkdir -p "$CI_PROJECT_DIR.tmp"'$'\n'
    for stage in prepare_script get_sources build_script upload_artifacts cleanup_file_variables; do
        # A stop (Ctrl-C, the deadline) skips every later run stage; a failure skips all but
        # the upload on failure and cleanup_file_variables.
        [ -z "$stop_reason" ] || continue
        if [ "$rc" != 0 ] && [ "$stage" != upload_artifacts ] && [ "$stage" != cleanup_file_variables ]; then
            continue
        fi
        case "$stage" in
            prepare_script) body='echo "Running on $(hostname) via smoke.sh..."' ;;
            get_sources)
                body="${prelude}echo 'Skipping Git repository setup'"$'\n''mkdir -p "$CI_PROJECT_DIR"'$'\n''cd "$CI_PROJECT_DIR"'$'\n'
                for kv in "${job_files[@]}"; do
                    body+="mkdir -p \"\$(dirname $(sq "${kv%%=*}"))\""$'\n'"printf '%s' $(sq "${kv#*=}") > $(sq "${kv%%=*}")"$'\n'
                done
                ;;
            build_script)
                body="${prelude}cd \"\$CI_PROJECT_DIR\""$'\n'
                for value in "${job_script[@]}"; do
                    body+="printf '\\033[32;1m\$ %s\\033[0;m\\n' $(sq "$value")"$'\n'"$value"$'\n'
                done
                ;;
            upload_artifacts)
                if [ "$rc" = 0 ]; then stage=upload_artifacts_on_success; else stage=upload_artifacts_on_failure; fi
                body="${prelude}cd \"\$CI_PROJECT_DIR\""$'\n'"if [ -f sagemaker.env ]; then cp sagemaker.env $(sq "$work/artifacts/$n.env"); echo 'Uploading artifacts as \"dotenv\" to coordinator... 201 Created'; else echo 'WARNING: sagemaker.env: no matching files'; fi"
                ;;
            cleanup_file_variables) body="${prelude}rm -f \"\$CI_PROJECT_DIR.tmp/gitlab_runner_env\"" ;;
        esac
        seq=$((seq + 1))
        mkdir -p "$tmp/script$seq"
        write_stage_script "$tmp/script$seq/script" "$body"
        [ "$stage" = build_script ] || [ "$rc" = 0 ] || status=failed
        set_env
        rm -f "$tmp/build_exit_code"
        exec_call "$tmp" "$log" "" "$executor" --config "$config" run "$tmp/script$seq/script" "$stage"
        local stage_rc=$?
        if [ "$rc" = 0 ] && [ "$stage_rc" != 0 ]; then
            rc=$stage_rc
            status=failed
        fi
    done
    # cleanup_exec always runs, on its own bound (the runner's cleanup_exec_timeout).
    cleanup_job "$n"
    case "$rc" in
        0) job_status=success ;;
        1) job_status="failed (exit code $(cat "$tmp/build_exit_code" 2>/dev/null || echo 1))" ;;
        124 | 137) job_status=timedout ;;
        *) job_status=system_failure ;;
    esac
    [ -z "$stop_reason" ] || [ "$rc" = 0 ] || job_status="canceled ($stop_reason)"
    say "job $n/5 $name: $job_status"
    [ "$rc" = 0 ]
}

# `cleanup` for job N, once, even after a cancel or the deadline (bounded by the teardown time).
declare -A cleaned=()
cleanup_job() { # n
    local n="$1" tmp="$work/job-$1" saved_deadline="$deadline"
    [ -z "${cleaned[$n]:-}" ] || return 0
    cleaned[$n]=1
    [ -f "$tmp/env" ] || return 0
    mapfile -d '' -t call_env <"$tmp/env"
    [ "$(remaining)" -gt 0 ] || deadline=$(($(date +%s) + teardown_s))
    exec_call "$tmp" "$work/job-$n.log" "" "$executor" --config "$config" cleanup ||
        say "job $n: cleanup exited $? (see $work/job-$n.log)"
    deadline="$saved_deadline"
}

# The value of KEY in job N's returned sagemaker.env.
dotenv() { # n key
    [ -f "$work/artifacts/$1.env" ] || return 0
    awk -v key="$2" 'index($0, key "=") == 1 { print substr($0, length(key) + 2); exit }' "$work/artifacts/$1.env"
}
upstream() { # n: job N's dotenv as job variables
    [ -f "$work/artifacts/$1.env" ] || return 0
    grep -E '^[A-Za-z_][A-Za-z0-9_]*=' "$work/artifacts/$1.env"
}

# --- the jobs ---------------------------------------------------------------------------------
group_existed=false
if aws sagemaker describe-model-package-group --model-package-group-name "$group" >/dev/null 2>&1; then
    group_existed=true
fi
run_start_iso="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
deploy_started=false
undeployed=false
jobs_ok=false

run_jobs() {
    job_vars=("SAGEMAKER_INSTANCE_TYPE=$instance_type" "SAGEMAKER_INSTANCE_COUNT=1" "SAGEMAKER_MAX_RUNTIME=60s")
    job_script=("${train_script[@]}")
    job_files=("README.md=sagemaker-executor smoke test $run_id"$'\n')
    run_job 1 smoke-train "$train_image" || return 1

    job_vars=("SAGEMAKER_ACTION=fargate")
    job_script=('echo "fargate task on $(uname -m)"' 'echo ok > fargate-report.txt')
    run_job 2 smoke-fargate "$fargate_image" || return 1

    mapfile -t job_vars < <(upstream 1)
    job_vars+=("SAGEMAKER_ACTION=register" "SAGEMAKER_MODEL_PACKAGE_GROUP=$group"
        "SAGEMAKER_APPROVAL=approved" "SAGEMAKER_INFERENCE_IMAGE=$serve_image"
        "SAGEMAKER_CONTENT_TYPES=$smoke_type"
        "SAGEMAKER_MODEL_DESCRIPTION=sagemaker-executor smoke test $run_id (deleted at its end)")
    job_script=('echo "not executed: the job becomes a Model Registry version"')
    run_job 3 smoke-register "" || return 1
    [ -n "$(dotenv 3 SAGEMAKER_MODEL_PACKAGE_ARN)" ] || { say "register returned no SAGEMAKER_MODEL_PACKAGE_ARN"; return 1; }

    mapfile -t job_vars < <(upstream 3)
    job_vars+=("SAGEMAKER_ACTION=deploy" "SAGEMAKER_ENDPOINT_NAME=$endpoint"
        "SAGEMAKER_SERVERLESS=true" "SAGEMAKER_SERVERLESS_MEMORY_MB=$serverless_mb"
        "SAGEMAKER_SERVERLESS_MAX_CONCURRENCY=1" "SAGEMAKER_DEPLOY_TIMEOUT=20m"
        "SAGEMAKER_SMOKE_REQUEST=smoke/request" "SAGEMAKER_SMOKE_CONTENT_TYPE=$smoke_type")
    job_script=('echo "not executed: the job becomes an endpoint deployment"')
    job_files=("smoke/request=$smoke_body")
    deploy_started=true
    run_job 4 smoke-deploy "" || return 1

    undeploy 5 || return 1
    undeployed=true
    return 0
}

undeploy() { # n
    mapfile -t job_vars < <(upstream 4)
    job_vars+=("SAGEMAKER_ACTION=undeploy" "SAGEMAKER_ENDPOINT_NAME=$endpoint")
    job_script=('echo "not executed: the job tears the endpoint down"')
    job_files=()
    run_job "$1" smoke-undeploy ""
}

# --- teardown: whatever the jobs got to, release it -------------------------------------------
torn_down=false
teardown() {
    $torn_down && return 0
    torn_down=true
    phase="teardown"
    signals=0
    deadline=$(($(date +%s) + teardown_s))
    local saved_reason="$stop_reason" n
    stop_reason=""
    # cleanup_exec for every job that started (run_job does it too; a bug or a signal may have
    # cut it short).
    for n in "${started_jobs[@]}"; do
        cleanup_job "$n"
    done
    if $deploy_started && ! $undeployed; then
        say "teardown: undeploying $endpoint"
        undeploy 6 || say "teardown: the undeploy job failed (see $work/job-6.log)"
    fi
    delete_registered
    delete_model_archive
    stop_reason="$saved_reason"
    phase="finished"
}

delete_registered() {
    local arn owner
    # Versions of the group created since the run started that carry the register job's id.
    for arn in $(aws sagemaker list-model-packages --model-package-group-name "$group" \
        --creation-time-after "$run_start_iso" --query 'ModelPackageSummaryList[].ModelPackageArn' \
        --output text 2>/dev/null); do
        [ "$arn" = None ] && continue
        owner="$(aws sagemaker describe-model-package --model-package-name "$arn" \
            --query 'CustomerMetadataProperties."gitlab:job-id"' --output text 2>/dev/null)"
        if [ "$owner" = "$(job_id 3)" ]; then
            if aws sagemaker delete-model-package --model-package-name "$arn" >/dev/null; then
                say "teardown: deleted model package $arn"
            fi
        fi
    done
    if ! $group_existed && aws sagemaker describe-model-package-group --model-package-group-name "$group" >/dev/null 2>&1; then
        local left
        left="$(aws sagemaker list-model-packages --model-package-group-name "$group" \
            --query 'length(ModelPackageSummaryList)' --output text 2>/dev/null)"
        if [ "$left" = 0 ] && aws sagemaker delete-model-package-group --model-package-group-name "$group" >/dev/null; then
            say "teardown: deleted model package group $group (this run created it)"
        fi
    fi
}

delete_model_archive() {
    if [ -n "$(aws s3 ls "$train_output/" --recursive 2>/dev/null)" ]; then
        aws s3 rm "$train_output/" --recursive --only-show-errors &&
            say "teardown: deleted $train_output/"
    fi
}

# Lists what this run created and is still there; returns 1 when something is.
report_leftovers() {
    local found=0 n out arn
    if aws sagemaker describe-endpoint --endpoint-name "$endpoint" >/dev/null 2>&1; then
        say "LEFT: endpoint $endpoint (aws sagemaker delete-endpoint --endpoint-name $endpoint)"; found=1
    fi
    out="$(aws sagemaker list-endpoint-configs --name-contains "$endpoint" --query 'EndpointConfigs[].EndpointConfigName' --output text 2>/dev/null)"
    if [ -n "$out" ] && [ "$out" != None ]; then say "LEFT: endpoint configs $out"; found=1; fi
    out="$(aws sagemaker list-models --name-contains "$endpoint" --query 'Models[].ModelName' --output text 2>/dev/null)"
    if [ -n "$out" ] && [ "$out" != None ]; then say "LEFT: models $out"; found=1; fi
    arn="$(dotenv 3 SAGEMAKER_MODEL_PACKAGE_ARN)"
    if [ -n "$arn" ] && aws sagemaker describe-model-package --model-package-name "$arn" >/dev/null 2>&1; then
        say "LEFT: model package $arn (aws sagemaker delete-model-package --model-package-name $arn)"; found=1
    fi
    if [ -n "$(aws s3 ls "$train_output/" --recursive 2>/dev/null)" ]; then
        say "LEFT: model archive under $train_output/"; found=1
    fi
    for n in 1 2 3 4 5 6; do
        if [ -n "$(aws s3 ls "s3://$bucket/$staging_prefix/$project_id/$(job_id "$n")/" --recursive 2>/dev/null)" ]; then
            say "LEFT: staged objects under s3://$bucket/$staging_prefix/$project_id/$(job_id "$n")/"; found=1
        fi
    done
    # gc's dry run lists training jobs in progress, running tasks and staged workspaces of
    # every job; the rows of this run's jobs are what it left.
    out="$("$executor" --config "$config" gc --dry-run --older-than 0s 2>&1)" || say "gc --dry-run failed: $out"
    for n in 1 2 3 4 5 6; do
        if printf '%s\n' "$out" | awk -v id="$(job_id "$n")" '{ for (i = 1; i <= NF; i++) if ($i == id) { print; found = 1 } } END { exit !found }'; then
            found=1
        fi
    done
    return "$found"
}

# --- cost -------------------------------------------------------------------------------------
# A timestamp as the AWS CLI prints it: epoch seconds (v1's default) or ISO 8601 (v2's).
epoch_of() {
    case "$1" in
        '' | None) return 0 ;;
        *[!0-9.]*) date -u -d "$1" +%s.%N 2>/dev/null ;;
        *) echo "$1" ;;
    esac
}
cost_report() {
    local billable rate train_cost=0 fargate_cost=0 serverless_cost=0 task cluster line
    local t0 t1 cpu mem secs bytes
    billable="$(grep -o 'billable seconds: [0-9]*' "$work/job-1.log" 2>/dev/null | tail -n 1 | awk '{print $3}')"
    rate="$(train_rate "$instance_type")"
    if [ -n "$billable" ] && [ -n "$rate" ]; then
        train_cost="$(awk -v s="$billable" -v r="$rate" 'BEGIN { printf "%.6f", s * r / 3600 }')"
        say "cost: training job $train_job_name: $billable billable s x \$$rate/h ($instance_type) = \$$train_cost"
    else
        say "cost: training job $train_job_name: no billable seconds in its log or no rate for $instance_type; not counted"
    fi
    task="$(dotenv 2 SAGEMAKER_ECS_TASK_ARN)"
    cluster="$(dotenv 2 SAGEMAKER_ECS_CLUSTER)"
    if [ -n "$task" ] && [ -n "$cluster" ] &&
        line="$(aws ecs describe-tasks --cluster "$cluster" --tasks "$task" \
            --query 'tasks[0].[pullStartedAt || startedAt || createdAt, stoppedAt, cpu, memory]' --output text 2>/dev/null)"; then
        read -r t0 t1 cpu mem <<<"$line"
        t0="$(epoch_of "$t0")" t1="$(epoch_of "$t1")"
        if [ -n "$t0" ] && [ -n "$t1" ]; then
            secs="$(awk -v a="$t0" -v b="$t1" -v m="$fargate_minimum_seconds" 'BEGIN { s = b - a; s = (s == int(s)) ? s : int(s) + 1; if (s < m) s = m; print s }')"
            fargate_cost="$(awk -v s="$secs" -v c="$cpu" -v g="$mem" -v rc="$fargate_vcpu_hour" -v rg="$fargate_gb_hour" \
                'BEGIN { printf "%.6f", s / 3600 * (c / 1024 * rc + g / 1024 * rg) }')"
            say "cost: Fargate task: $secs billed s (pull start to stop, at least ${fargate_minimum_seconds} s) x ($cpu CPU units, $mem MiB) = \$$fargate_cost"
        else
            say "cost: Fargate task: ECS reports no start and stop time ($line); not counted"
        fi
    else
        say "cost: Fargate task: no task ARN returned or ECS does not describe it; not counted"
    fi
    if grep -q 'Smoke test passed' "$work/job-4.log" 2>/dev/null; then
        bytes="$(grep -o '([0-9]* bytes' "$work/job-4.log" | tr -dc '0-9\n' | awk '{ s += $1 } END { print s + 0 }')"
        serverless_cost="$(awk -v mb="$serverless_mb" -v s="$serverless_max_seconds" -v r="$serverless_gb_second" \
            -v b="$bytes" -v d="$serverless_gb_data" 'BEGIN { printf "%.6f", mb / 1024 * s * r + b / 1073741824 * d }')"
        say "cost: serverless endpoint $endpoint: 1 invocation, at most ${serverless_max_seconds} s x $serverless_mb MB, $bytes bytes = at most \$$serverless_cost (no charge while idle)"
    fi
    say "$(awk -v a="$train_cost" -v b="$fargate_cost" -v c="$serverless_cost" \
        'BEGIN { printf "total cost: $%.4f (estimate at us-east-1 list prices of 2025-06; training $%.4f, Fargate $%.4f, serverless at most $%.4f)", a + b + c, a, b, c }')"
}

started_at="$(date +%s)"
if run_jobs; then jobs_ok=true; fi
[ -z "$stop_reason" ] || say "stopped: $stop_reason"
teardown
say "checking that nothing this run created is left"
clean=true
if ! report_leftovers; then clean=false; fi
$clean && say "nothing left behind"
cost_report
say "took $(($(date +%s) - started_at)) s"
if $jobs_ok && $clean; then
    say "PASSED"
    if $own_work; then rm -rf "$work"; fi
    exit 0
fi
say "FAILED: $($jobs_ok && echo "something was left behind" || echo "a job did not succeed"); logs in $work"
exit 1
