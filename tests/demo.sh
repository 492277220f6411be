#!/usr/bin/env bash
# The demo (README): the example project's real .gitlab-ci.yml (examples/ml-pipeline/) run
# through sagemaker-executor by the runner emulator, exactly as gitlab-runner drives a custom
# executor, against the local AWS simulator: a merge request pipeline (its candidate endpoint
# torn down by the on_stop job when the merge request closes), then the default-branch
# pipeline; then two single jobs that must fail (a script exiting 3, a setting the policy
# refuses). Training jobs, Fargate tasks and endpoints really run in the simulator.
# Exits 0 only when every expected outcome holds.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
started=$SECONDS

bash tests/sim/setup.sh
cargo build --workspace --bins --quiet

work="$(mktemp -d "${TMPDIR:-/tmp}/sagemaker-executor-demo.XXXXXX")"
mkdir -p "$work/builds" "$work/cache"
sim_pid=""
cleanup() {
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

# The simulator hides the builds dir from its containers: workspaces travel through S3 only.
mkfifo "$work/sim.in"
.venv/bin/python tests/sim/run.py --port 0 --exit-on-stdin-eof --stop-grace 5 --hide "$work/builds" \
    <"$work/sim.in" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
exec 9>"$work/sim.in"
for _ in $(seq 1 150); do
    grep -q '^SIM_READY ' "$work/sim.out" 2>/dev/null && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; exit 1; }
    sleep 0.1
done
endpoint="$(awk '/^SIM_READY /{print $2}' "$work/sim.out")"
[ -n "$endpoint" ] || { echo "the simulator did not start" >&2; cat "$work/sim.err" >&2; exit 1; }

export AWS_ENDPOINT_URL="$endpoint" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
    AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_EC2_METADATA_DISABLED=true
# What an admin and the team set up beforehand (buckets, cluster, log group, the API's ECR
# repository and ECS service, the training data) and what the images run in the simulator.
read -r subnets groups < <(.venv/bin/python tests/demo/setup_aws.py)

sed -e "s|@ROOT@|$work|g" -e "s|@SUBNETS@|$subnets|" -e "s|@GROUPS@|$groups|" \
    -e "s|@HELPER@|$repo/target/debug/sagemaker-executor|" \
    tests/demo/executor.toml >"$work/executor.toml"
echo "== executor config check: $(target/debug/sagemaker-executor --config "$work/executor.toml" validate)"
echo "== simulator at $endpoint"

emulator=(target/debug/runner-emulator --executor target/debug/sagemaker-executor
    --executor-config "$work/executor.toml" --work-dir "$work/runner")
pipeline=(--pipeline examples/ml-pipeline/.gitlab-ci.yml --project-path ml/churn-model --project-id 42)
results=()
check() {
    local what="$1"
    shift
    if "$@"; then results+=("PASS $what"); else results+=("FAIL $what"); fi
}

echo "== merge request !17 (feature/better-features -> main); then the merge request closes"
check "merge request pipeline: tests, image build, train, register, candidate endpoint; closing stops it" \
    "${emulator[@]}" "${pipeline[@]}" --source merge_request_event --branch feature/better-features \
    --merge-request-iid 17 --stop-environments \
    --expect-ran unit-tests,build-api-image,train,register,deploy-candidate,stop-candidate

echo "== the default branch (main)"
check "default-branch pipeline: tests, image build, train, register, stable endpoint, API rollout" \
    "${emulator[@]}" "${pipeline[@]}" --source push --branch main \
    --expect-ran unit-tests,build-api-image,train,register,deploy-stable,deploy-api

echo "== jobs that must fail: a script exiting 3, an instance type the policy refuses"
check "failing script and policy refusal fail as expected" \
    "${emulator[@]}" tests/demo/jobs/train-fails.yaml tests/demo/jobs/policy-refused.yaml

echo
echo "=== demo summary ($((SECONDS - started)) s) ==="
status=0
for line in "${results[@]}"; do
    echo "$line"
    [[ "$line" == PASS* ]] || status=1
done
exit "$status"
