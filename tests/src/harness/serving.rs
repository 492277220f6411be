//! What the endpoint tests share: a serving "image" the simulator runs as a small Python
//! server, model archives in the staging bucket, and registry versions that serve them.

use std::process::Command;

use aws_sdk_sagemaker::types::{
    InferenceSpecification, ModelApprovalStatus, ModelPackageContainerDefinition,
};
use serde_json::json;

use super::setup::BUCKET;
use super::world::World;

/// The serving image (an ECR reference the simulator maps to [`SERVE_PY`]).
pub const SERVE_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/churn/serve:1";

/// A SageMaker serving container in a few lines: `/ping`, and `/invocations` answering with
/// the model's `answer.txt` (from `/opt/ml/model`, the extracted model.tar.gz) and the size of
/// the request it got.
const SERVE_PY: &str = r#"
import http.server, json, os

ANSWER = open("/opt/ml/model/answer.txt").read().strip()

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = json.dumps({"answer": ANSWER, "got": len(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
"#;

impl World {
    /// Teaches the simulator [`SERVE_IMAGE`] and creates the model package `group`.
    pub fn serve_image(&self, group: &str) {
        self.learn_serve_image();
        self.rt
            .block_on(
                self.sagemaker
                    .create_model_package_group()
                    .model_package_group_name(group)
                    .send(),
            )
            .expect("model package group created");
    }

    /// Teaches the simulator [`SERVE_IMAGE`] only (for a test whose jobs create the group).
    pub fn learn_serve_image(&self) {
        let serve = self.root().join("serve.py");
        std::fs::write(&serve, SERVE_PY).expect("serve.py written");
        self.sim
            .post_json(
                "/_sim/images",
                &json!({"images": {SERVE_IMAGE: {"entrypoint": ["/usr/bin/python3", serve.to_string_lossy()]}}}),
            )
            .expect("simulator learns the serving image");
    }

    /// Uploads a model archive whose `answer.txt` says `answer`; returns its S3 URI.
    pub fn upload_model(&self, answer: &str) -> String {
        let dir = self.root().join(format!("model-{answer}"));
        std::fs::create_dir_all(&dir).expect("model dir");
        std::fs::write(dir.join("answer.txt"), answer).expect("answer.txt written");
        let archive = dir.join("model.tar.gz");
        let tar = Command::new("tar")
            .arg("czf")
            .arg(&archive)
            .arg("-C")
            .arg(&dir)
            .arg("answer.txt")
            .status()
            .expect("tar runs");
        assert!(tar.success());
        let key = format!("models/{answer}/model.tar.gz");
        self.rt
            .block_on(
                self.s3
                    .put_object()
                    .bucket(BUCKET)
                    .key(&key)
                    .body(std::fs::read(&archive).expect("model archive read").into())
                    .send(),
            )
            .expect("model archive uploaded");
        format!("s3://{BUCKET}/{key}")
    }

    /// Registers `model` as a version of `group` with `status`, served by [`SERVE_IMAGE`];
    /// returns its ARN.
    pub fn register_serving(
        &self,
        group: &str,
        model: &str,
        status: ModelApprovalStatus,
    ) -> String {
        let out = self
            .rt
            .block_on(
                self.sagemaker
                    .create_model_package()
                    .model_package_group_name(group)
                    .model_approval_status(status)
                    .inference_specification(
                        InferenceSpecification::builder()
                            .containers(
                                ModelPackageContainerDefinition::builder()
                                    .image(SERVE_IMAGE)
                                    .model_data_url(model)
                                    .build(),
                            )
                            .supported_content_types("application/json")
                            .supported_response_mime_types("application/json")
                            .build(),
                    )
                    .send(),
            )
            .expect("model package created");
        out.model_package_arn().expect("package ARN").to_owned()
    }
}
