#!/usr/bin/env python3
"""Measure the simulator: start-up time to SIM_READY (median of N), idle RSS, RSS after a
training job (and after ECS/endpoint calls, when those modules are present).

    <repo>/.venv/bin/python tests/sim/measure.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUN_PY = os.path.join(HERE, "run.py")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def start():
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, RUN_PY, "--port", "0", "--exit-on-stdin-eof",
                          "--stop-grace", "2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    line = p.stdout.readline().decode().strip()
    took = time.monotonic() - t0
    if not line.startswith("SIM_READY "):
        raise RuntimeError(f"bad first line {line!r}")
    return p, line.split()[1], took


def stop(p):
    p.stdin.close()
    p.wait(20)


def client(endpoint, service):
    import boto3
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def run_training_job(endpoint):
    s3, sm = client(endpoint, "s3"), client(endpoint, "sagemaker")
    s3.create_bucket(Bucket="measure")
    s3.put_object(Bucket="measure", Key="in/data.bin", Body=os.urandom(8 << 20))
    sm.create_training_job(
        TrainingJobName="measure-job",
        AlgorithmSpecification={"TrainingImage": "img", "TrainingInputMode": "File",
                                "ContainerEntrypoint": ["/bin/sh", "-c"],
                                "ContainerArguments": [
                                    "for i in $(seq 1 2000); do echo line $i loss=0.$i; done; "
                                    "head -c 8388608 /dev/urandom > /opt/ml/model/m.bin"],
                                "MetricDefinitions": [{"Name": "loss",
                                                       "Regex": "loss=([0-9.]+)"}]},
        RoleArn="arn:aws:iam::123456789012:role/r",
        InputDataConfig=[{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://measure/in/"}}}],
        OutputDataConfig={"S3OutputPath": "s3://measure/out"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600})
    deadline = time.time() + 120
    while time.time() < deadline:
        d = sm.describe_training_job(TrainingJobName="measure-job")
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
            return
        time.sleep(0.2)
    raise RuntimeError("training job did not finish")


def touch_other_services(endpoint):
    client(endpoint, "ecs").list_clusters()
    client(endpoint, "ec2").describe_subnets()
    client(endpoint, "sagemaker").list_endpoints()
    client(endpoint, "logs").describe_log_groups()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    times, idle = [], []
    for _ in range(args.runs):
        p, _ep, took = start()
        times.append(took)
        time.sleep(0.5)
        idle.append(rss_mib(p.pid))
        stop(p)
    print(f"start-up to SIM_READY: median {statistics.median(times):.2f} s over {args.runs} runs "
          f"(min {min(times):.2f}, max {max(times):.2f})")
    print(f"idle RSS: median {statistics.median(idle):.0f} MiB")
    p, ep, _ = start()
    try:
        t0 = time.monotonic()
        run_training_job(ep)
        print(f"training job (8 MiB input, 2000 log lines, 8 MiB model): "
              f"{time.monotonic() - t0:.2f} s; RSS after: {rss_mib(p.pid):.0f} MiB")
        touch_other_services(ep)
        print(f"RSS after also calling ECS/EC2/SageMaker endpoints/Logs: {rss_mib(p.pid):.0f} MiB")
    finally:
        stop(p)


if __name__ == "__main__":
    main()
