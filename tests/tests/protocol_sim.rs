//! The simulator launcher: starts `tests/sim/run.py` from the repo's venv, answers on its
//! control API, logs AWS calls, and goes away with the handle.
//!
//! Needs the venv: `tests/sim/setup.sh`.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use std::time::Duration;

use e2e::sim::{Simulator, http_request_with_headers};

#[test]
fn simulator_starts_answers_logs_calls_and_stops_on_drop() {
    let hidden = tempfile::tempdir().unwrap();
    let sim = Simulator::start(&[hidden.path()]).expect("simulator starts (tests/sim/setup.sh)");
    assert!(
        sim.endpoint().starts_with("http://127.0.0.1:"),
        "{}",
        sim.endpoint()
    );
    let env = sim.aws_env();
    assert!(env.contains(&("AWS_ENDPOINT_URL".to_owned(), sim.endpoint().to_owned())));
    assert!(env.contains(&("AWS_REGION".to_owned(), "us-east-1".to_owned())));
    assert!(env.contains(&("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned())));

    sim.reset().unwrap();
    let network = sim.default_network().unwrap();
    assert!(!network.subnets.is_empty() && !network.security_groups.is_empty());
    let processes = sim.processes().unwrap();
    assert_eq!(processes["processes"], serde_json::json!([]));

    // One AWS call through the JSON protocol; it shows up in the call log by name.
    let (host, port) = sim.address();
    let host = host.to_owned();
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/sagemaker/aws4_request, \
                SignedHeaders=host, Signature=00";
    let (status, body) = http_request_with_headers(
        &host,
        port,
        "POST",
        "/",
        &[
            ("X-Amz-Target", "SageMaker.ListTrainingJobs"),
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Authorization", auth),
        ],
        b"{}",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    sim.wait_for_call("SageMaker.ListTrainingJobs", Duration::from_secs(10))
        .unwrap();
    assert!(
        sim.calls()
            .unwrap()
            .contains(&"SageMaker.ListTrainingJobs".to_owned())
    );

    // A bad control request is an error, not a panic.
    assert!(sim.get_json("/_sim/no-such-endpoint").is_err());

    let pid = sim.pid();
    drop(sim);
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "simulator {pid} still running after drop");
    assert!(std::net::TcpStream::connect((host.as_str(), port)).is_err());
}
