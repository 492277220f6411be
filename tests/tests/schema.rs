//! Published admin material must match the code: the spec file JSON Schema and the example
//! executor config.

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

#[test]
fn published_spec_schema_matches_the_code() {
    let exe = e2e::paths::executor_binary().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--config", "/nonexistent", "spec-schema"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let published =
        std::fs::read_to_string(e2e::paths::workspace_root().join("runner-setup/spec.schema.json"))
            .unwrap();
    // Compared as JSON values: key order depends on serde_json features unified into the build.
    let as_json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    assert_eq!(
        as_json(&published),
        as_json(&generated),
        "runner-setup/spec.schema.json is stale: regenerate it with `sagemaker-executor spec-schema > runner-setup/spec.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(
        schema["properties"]["train"]["anyOf"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{schema}"
    );
}

#[test]
fn the_example_executor_config_is_valid() {
    let exe = e2e::paths::executor_binary().unwrap();
    let example = e2e::paths::workspace_root().join("runner-setup/sagemaker-executor.toml");
    let out = std::process::Command::new(exe)
        .arg("--config")
        .arg(&example)
        .arg("validate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}
