"""Local AWS simulator for sagemaker-executor's tests: pinned moto + extensions.

Core (server, control, faults, calls, runtime, cwlogs, s3util) and SageMaker training jobs
(training); ECS tasks/services, endpoints and the model registry live in their own modules.
"""
