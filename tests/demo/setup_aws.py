"""The AWS resources an admin (and the ML team) would have before the example pipeline
(`examples/ml-pipeline/.gitlab-ci.yml`) runs, created in the simulator at AWS_ENDPOINT_URL:
the executor's staging bucket, Fargate cluster and log group; the training data in S3; the
ECR repository and the ECS service of the churn API; and what the images run, since the
simulator never pulls them (`/_sim/images`): the training image serves with the example's
serve.py, and kaniko's image has the simulator's kaniko shim on its PATH.

Used by tests/demo.sh and tests/tests/pipeline.rs. Prints one line: the default network's
subnets and security groups as two JSON lists, for the executor config's [fargate].
"""
import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import boto3

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ml-pipeline"
SHIMS = REPO / "tests" / "sim" / "shims"
TRAIN_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/churn-train:2.1"
KANIKO_IMAGE = "gcr.io/kaniko-project/executor:debug"
# kaniko's debug image has /kaniko (where `executor` lives) and /busybox on its PATH.
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

endpoint = os.environ["AWS_ENDPOINT_URL"]
s3 = boto3.client("s3")
s3.create_bucket(Bucket="ml-ci-staging")
s3.create_bucket(Bucket="ml-datasets")
s3.upload_file(str(EXAMPLE / "data" / "churn-sample.csv"), "ml-datasets", "churn/train/churn-sample.csv")
ecs = boto3.client("ecs")
ecs.create_cluster(clusterName="ml-ci")
boto3.client("logs").create_log_group(logGroupName="/sagemaker-executor/fargate")
boto3.client("ecr").create_repository(repositoryName="api/churn")
net = json.load(urllib.request.urlopen(endpoint + "/_sim/default-network"))
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
python3 = shutil.which("python3") or sys.executable
images = {
    TRAIN_IMAGE: {"entrypoint": [python3, str(EXAMPLE / "serve.py")]},
    KANIKO_IMAGE: {"entrypoint": [str(SHIMS / "kaniko" / "executor")],
                   "env": {"PATH": f"{SHIMS / 'kaniko'}:{CONTAINER_PATH}"}},
}
req = urllib.request.Request(endpoint + "/_sim/images", method="POST", data=json.dumps({"images": images}).encode(),
                             headers={"Content-Type": "application/json"})
urllib.request.urlopen(req).read()
print(json.dumps(net["subnets"], separators=(",", ":")), json.dumps(net["security_groups"], separators=(",", ":")))
