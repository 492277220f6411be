#!/usr/bin/env bash
# The demo (README): a sample ML pipeline run through sagemaker-executor, driven by the runner
# emulator exactly as gitlab-runner drives a custom executor, against the local AWS simulator.
# Training jobs really run their script in a simulated SageMaker container.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

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
# AWS resources an admin would have: the staging bucket, the Fargate cluster and log group, and
# an ECS service for the deployment job. The Fargate network comes from the simulator's VPC.
network="$(DEMO_PYTHON="$(command -v python3)" DEMO_SERVE="$repo/tests/demo/serve.py" .venv/bin/python - <<'PY'
import json, os, urllib.request
import boto3
boto3.client("s3").create_bucket(Bucket="ml-ci-staging")
ecs = boto3.client("ecs")
ecs.create_cluster(clusterName="ml-ci")
boto3.client("logs").create_log_group(logGroupName="/sagemaker-executor/fargate")
net = json.load(urllib.request.urlopen(os.environ["AWS_ENDPOINT_URL"] + "/_sim/default-network"))
td = ecs.register_task_definition(
    family="churn-api", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256", memory="512",
    containerDefinitions=[{"name": "web", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/api/churn:1.0",
                           "essential": True, "command": ["sleep", "3600"]}],
)["taskDefinition"]["taskDefinitionArn"]
ecs.create_service(
    cluster="ml-ci", serviceName="churn-api", taskDefinition=td, desiredCount=1, launchType="FARGATE",
    networkConfiguration={"awsvpcConfiguration": {"subnets": net["subnets"], "securityGroups": net["security_groups"]}},
    deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": True}},
)
# The training image also serves (as SageMaker framework images do): the simulator runs the
# demo's serve.py for it, answering from the model file the train job wrote.
req = urllib.request.Request(
    os.environ["AWS_ENDPOINT_URL"] + "/_sim/images", method="POST",
    data=json.dumps({"images": {"123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/churn-train:2.1": {
        "entrypoint": [os.environ["DEMO_PYTHON"], os.environ["DEMO_SERVE"]]}}}).encode(),
    headers={"Content-Type": "application/json"})
urllib.request.urlopen(req).read()
print(json.dumps(net["subnets"], separators=(",", ":")), json.dumps(net["security_groups"], separators=(",", ":")))
PY
)"
read -r subnets groups <<<"$network"

sed -e "s|@ROOT@|$work|g" -e "s|@SUBNETS@|$subnets|" -e "s|@GROUPS@|$groups|" \
    -e "s|@HELPER@|$repo/target/debug/sagemaker-executor|" \
    tests/demo/executor.toml >"$work/executor.toml"
echo "== executor config check: $(target/debug/sagemaker-executor --config "$work/executor.toml" validate)"
echo "== simulator at $endpoint; running the sample pipeline"
target/debug/runner-emulator \
    --executor target/debug/sagemaker-executor \
    --executor-config "$work/executor.toml" \
    --work-dir "$work/runner" \
    tests/demo/pipeline/*.yaml
