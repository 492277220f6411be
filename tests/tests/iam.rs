//! IAM from the code: the operations each principal calls are derived from the source, and the
//! policies `runner-setup/cloudformation/sagemaker-executor.yaml` gives that principal must grant
//! exactly those (plus a short, commented list of actions AWS checks on the side of a call).
//!
//! - Operations: every `aws-sdk-<service>` crate the executor depends on (from `cargo
//!   metadata`) has one directory per operation under `src/operation/`; a `.op_name()` call
//!   counts when its receiver is that service's client (`ctx.aws.sagemaker`, `s3`, `c.ec2`, ...)
//!   or, for an unnamed receiver (`self.client`), when the file uses that service's client.
//!   Comments, strings and `#[cfg(test)]` items and modules are not code paths.
//! - Principals: the runner host role runs everything in `executor/src` and `stages/src` but the
//!   Fargate helper (`stages/src/fargate/helper.rs` and its subcommand
//!   `executor/src/stage/workspace.rs`); the GitLab OIDC role (per-job credentials) the same
//!   but `doctor`; the job task role runs the helper and the `crate::` functions it calls (the
//!   workspace upload engine).
//! - Actions: `service:Operation`, with the real exceptions of [`iam_action`]. The SDK's own
//!   calls (STS AssumeRole for `[aws] assume_role_arn`) are the assumed role's trust, not a
//!   policy action, and are not `.operation()` calls of the code.
//! - Granted: the Allow actions of the role's inline policies and of every managed policy
//!   attached to it, optional ones included; compared as actions, not resources or conditions.
//!
//! `SME_IAM_TEMPLATE=<path>` checks another template (e.g. a hand-edited copy).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "an integration test reports failure by panicking"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use regex::Regex;
use serde_yaml::Value;

/// An SDK crate the executor uses, the IAM prefix of its actions, and the names its client goes
/// by in the code (fields such as `ctx.aws.sagemaker`, locals such as `sm`).
struct Service {
    krate: &'static str,
    prefix: &'static str,
    receivers: &'static [&'static str],
}

const SERVICES: &[Service] = &[
    Service {
        krate: "sagemaker",
        prefix: "sagemaker",
        receivers: &["sagemaker", "sm"],
    },
    // InvokeEndpoint is authorized as sagemaker:InvokeEndpoint.
    Service {
        krate: "sagemakerruntime",
        prefix: "sagemaker",
        receivers: &["runtime"],
    },
    Service {
        krate: "s3",
        prefix: "s3",
        receivers: &["s3"],
    },
    Service {
        krate: "ecs",
        prefix: "ecs",
        receivers: &["ecs"],
    },
    Service {
        krate: "cloudwatchlogs",
        prefix: "logs",
        receivers: &["logs"],
    },
    Service {
        krate: "sts",
        prefix: "sts",
        receivers: &["sts"],
    },
    Service {
        krate: "iam",
        prefix: "iam",
        receivers: &["iam"],
    },
    Service {
        krate: "ec2",
        prefix: "ec2",
        receivers: &["ec2"],
    },
    Service {
        krate: "ecr",
        prefix: "ecr",
        receivers: &["ecr"],
    },
    Service {
        krate: "sqs",
        prefix: "sqs",
        receivers: &["sqs"],
    },
];

/// The IAM action that authorizes `op` (CamelCase) of the SDK crate `krate`; `None` when the
/// call needs no permission.
fn iam_action(krate: &str, op: &str) -> Option<String> {
    let s3 = |a: &str| Some(format!("s3:{a}"));
    match (krate, op) {
        // Anyone may ask who they are.
        ("sts", "GetCallerIdentity") => None,
        ("s3", "ListObjectsV2" | "ListObjects" | "HeadBucket") => s3("ListBucket"),
        ("s3", "HeadObject") => s3("GetObject"),
        ("s3", "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload") => {
            s3("PutObject")
        }
        ("s3", "DeleteObjects") => s3("DeleteObject"),
        ("s3", "ListMultipartUploads") => s3("ListBucketMultipartUploads"),
        ("s3", "ListParts") => s3("ListMultipartUploadParts"),
        ("s3", "ListObjectVersions") => s3("ListBucketVersions"),
        ("s3", "GetBucketEncryption") => s3("GetEncryptionConfiguration"),
        ("s3", "PutBucketEncryption") => s3("PutEncryptionConfiguration"),
        ("s3", "GetPublicAccessBlock") => s3("GetBucketPublicAccessBlock"),
        ("s3", "PutPublicAccessBlock") => s3("PutBucketPublicAccessBlock"),
        ("s3", "GetBucketLifecycleConfiguration") => s3("GetLifecycleConfiguration"),
        ("s3", "PutBucketLifecycleConfiguration") => s3("PutLifecycleConfiguration"),
        _ => {
            let prefix = SERVICES
                .iter()
                .find(|s| s.krate == krate)
                .map_or(krate, |s| s.prefix);
            Some(format!("{prefix}:{op}"))
        }
    }
}

/// Actions AWS authorizes on the side of a call, not as a call of their own. Each is "used" when
/// one of the calls in `by` is; `required` ones must then be granted too.
struct Implied {
    action: &'static str,
    by: &'static [&'static str],
    required: bool,
}

const IMPLIED: &[Implied] = &[
    // Handing a role to a service: the SageMaker execution role (CreateTrainingJob,
    // CreateModel), the task and execution roles (RegisterTaskDefinition, RunTask).
    Implied {
        action: "iam:PassRole",
        by: &[
            "sagemaker:CreateTrainingJob",
            "sagemaker:CreateModel",
            "ecs:RegisterTaskDefinition",
            "ecs:RunTask",
        ],
        required: true,
    },
    // Every SageMaker create carries the managed-by tag; SageMaker authorizes it as AddTags.
    Implied {
        action: "sagemaker:AddTags",
        by: &[
            "sagemaker:CreateTrainingJob",
            "sagemaker:CreateModelPackageGroup",
            "sagemaker:CreateModelPackage",
            "sagemaker:CreateModel",
            "sagemaker:CreateEndpointConfig",
            "sagemaker:CreateEndpoint",
        ],
        required: true,
    },
    // Likewise ECS authorizes tags on RunTask / RegisterTaskDefinition as TagResource.
    Implied {
        action: "ecs:TagResource",
        by: &["ecs:RunTask", "ecs:RegisterTaskDefinition"],
        required: true,
    },
    // S3 uses the staging bucket's KMS key on the caller's behalf (only with KmsKeyArn set).
    Implied {
        action: "kms:GenerateDataKey",
        by: &["s3:PutObject"],
        required: false,
    },
    Implied {
        action: "kms:Decrypt",
        by: &["s3:GetObject", "s3:PutObject"],
        required: false,
    },
    // A tagged role session (per-job credentials with session_tags) is authorized as
    // TagSession beside AssumeRole.
    Implied {
        action: "sts:TagSession",
        by: &["sts:AssumeRole"],
        required: false,
    },
];

/// Calls authenticated by what they carry, not by the caller's identity policy: no grant is
/// needed (the role's trust policy decides).
const TOKEN_AUTHENTICATED: &[&str] = &["sts:AssumeRoleWithWebIdentity"];

// ------------------------------------------------------------------------------------------
// The code
// ------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Operation names (snake_case, as the fluent client spells them) of each SDK crate the
/// executor's crates depend on, from the crates' `src/operation/` directories.
fn sdk_operations() -> BTreeMap<String, BTreeSet<String>> {
    let dirs = sdk_dirs_from_lock().unwrap_or_else(sdk_dirs_from_metadata);
    let mut ops = BTreeMap::new();
    for (krate, dir) in dirs {
        assert!(
            SERVICES.iter().any(|s| s.krate == krate),
            "aws-sdk-{krate} is a dependency: add it to SERVICES in tests/tests/iam.rs (IAM prefix, client names)"
        );
        let dir = dir.join("src/operation");
        let names: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.len() > 1, "{} lists no operations", dir.display());
        ops.insert(krate, names);
    }
    ops
}

/// The `aws-sdk-*` crates `stages` and `executor` depend on, and their source directories: from
/// the manifests, `Cargo.lock` and Cargo's registry, without running cargo (which waits for the
/// package cache lock while any other build holds it). `None` when that is not conclusive.
fn sdk_dirs_from_lock() -> Option<BTreeMap<String, PathBuf>> {
    let root = repo();
    let dep = Regex::new(r"(?m)^aws-sdk-([a-z0-9]+)\s*[.=]").unwrap();
    let mut krates = BTreeSet::new();
    for manifest in ["stages/Cargo.toml", "executor/Cargo.toml"] {
        let text = std::fs::read_to_string(root.join(manifest)).ok()?;
        let deps = text.split("\n[").find(|t| t.starts_with("dependencies]"))?;
        krates.extend(dep.captures_iter(deps).map(|c| c[1].to_owned()));
    }
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).ok()?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let registries: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let mut dirs = BTreeMap::new();
    for k in krates {
        let version = Regex::new(&format!(r#"name = "aws-sdk-{k}"\nversion = "([^"]+)""#)).unwrap();
        let versions: Vec<&str> = version
            .captures_iter(&lock)
            .map(|c| c.get(1).unwrap().as_str())
            .collect();
        let [version] = versions[..] else { return None };
        let dir = registries
            .iter()
            .map(|r| r.join(format!("aws-sdk-{k}-{version}")))
            .find(|d| d.is_dir())?;
        dirs.insert(k, dir);
    }
    (!dirs.is_empty()).then_some(dirs)
}

/// The same from `cargo metadata` (vendored or git sources, an unusual `CARGO_HOME`).
fn sdk_dirs_from_metadata() -> BTreeMap<String, PathBuf> {
    // The host's packages only: resolving every platform's would download crates never built.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let version = Command::new(rustc).arg("-vV").output().expect("rustc -vV");
    let version = String::from_utf8(version.stdout).unwrap();
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let metadata = |extra: &[&str]| {
        Command::new(&cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--filter-platform",
                host,
            ])
            .args(extra)
            .current_dir(repo())
            .output()
            .expect("cargo metadata")
    };
    // Offline first (the crates are there once the workspace is built), else let cargo fetch.
    let mut out = metadata(&["--offline"]);
    if !out.status.success() {
        out = metadata(&[]);
    }
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let mut wanted = BTreeSet::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        if members.contains(p["id"].as_str().unwrap())
            && matches!(name, "sagemaker-stages" | "sagemaker-executor")
        {
            for d in p["dependencies"].as_array().unwrap() {
                let dep = d["name"].as_str().unwrap();
                if let Some(krate) = dep.strip_prefix("aws-sdk-")
                    && d["kind"].is_null()
                {
                    wanted.insert(krate.to_owned());
                }
            }
        }
    }
    assert!(
        !wanted.is_empty(),
        "no aws-sdk-* dependency of stages/executor in cargo metadata"
    );
    wanted
        .into_iter()
        .map(|krate| {
            let pkg = packages
                .iter()
                .find(|p| p["name"].as_str() == Some(&format!("aws-sdk-{krate}")))
                .unwrap_or_else(|| panic!("aws-sdk-{krate} is not in cargo metadata"));
            let dir = Path::new(pkg["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .to_path_buf();
            (krate, dir)
        })
        .collect()
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `text` with comments, string and char literals replaced by spaces (newlines kept, so offsets
/// and line numbers stay).
fn blank(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let wipe = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                wipe(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (1, i + 2);
                while j < b.len() && depth > 0 {
                    if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                        depth += 1;
                        j += 2;
                    } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                        depth -= 1;
                        j += 2;
                    } else {
                        j += 1;
                    }
                }
                wipe(&mut out, i, j);
                i = j;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = text[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                wipe(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                wipe(&mut out, i, end);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{..}'), else a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    text[i + 2..].find('\'').map(|n| i + 2 + n + 1)
                } else if b.get(i + 2) == Some(&b'\'') {
                    Some(i + 3)
                } else {
                    text[i + 1..]
                        .chars()
                        .next()
                        .filter(|c| c.len_utf8() > 1)
                        .and_then(|c| {
                            (b.get(i + 1 + c.len_utf8()) == Some(&b'\''))
                                .then(|| i + 2 + c.len_utf8())
                        })
                };
                match end {
                    Some(e) => {
                        wipe(&mut out, i, e);
                        i = e;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).unwrap()
}

/// Removes the items under `#[cfg(test)]` from blanked code; returns the text and the names of
/// out-of-line modules declared under it (`#[cfg(test)] mod tests;`).
fn strip_cfg_test(code: &str) -> (String, Vec<String>) {
    let attr = Regex::new(r"#\[cfg\(test\)\]").unwrap();
    let module =
        Regex::new(r"^\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;").unwrap();
    let mut out = code.as_bytes().to_vec();
    let mut modules = Vec::new();
    for m in attr.find_iter(code) {
        let rest = &code[m.end()..];
        if let Some(c) = module.captures(rest) {
            modules.push(c[1].to_owned());
        }
        let Some(open) = rest.find(['{', ';']) else {
            continue;
        };
        let mut end = m.end() + open + 1;
        if rest.as_bytes()[open] == b'{' {
            let mut depth = 1;
            while end < code.len() && depth > 0 {
                match code.as_bytes()[end] {
                    b'{' => depth += 1,
                    b'}' => depth -= 1,
                    _ => {}
                }
                end += 1;
            }
        }
        for c in &mut out[m.start()..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    (String::from_utf8(out).unwrap(), modules)
}

/// One source file, as code (comments, strings and test items blanked).
struct Source {
    rel: String,
    code: String,
}

/// Every non-test source file of `dirs` (relative to the repository).
fn sources(dirs: &[&str]) -> Vec<Source> {
    let root = repo();
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| root.join(d)).collect();
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().is_some_and(|n| n != "tests") {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut parsed: BTreeMap<PathBuf, (String, Vec<String>)> = files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let r = strip_cfg_test(&blank(&text));
            (p, r)
        })
        .collect();
    // Files of `#[cfg(test)] mod x;` modules, and everything under them, are not code paths.
    let mut test_dirs: Vec<PathBuf> = Vec::new();
    for (p, (_, mods)) in &parsed {
        let stem = p.file_stem().unwrap().to_string_lossy();
        let base = if matches!(&*stem, "mod" | "lib" | "main") {
            p.parent().unwrap().to_path_buf()
        } else {
            p.with_extension("")
        };
        for m in mods {
            test_dirs.push(base.join(m));
            test_dirs.push(base.join(format!("{m}.rs")));
        }
    }
    parsed.retain(|p, _| !test_dirs.iter().any(|t| p.starts_with(t)));
    parsed
        .into_iter()
        .map(|(p, (code, _))| Source {
            rel: p
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            code,
        })
        .collect()
}

/// The actions the code calls (`service:Action`), each with the `file:line` of its calls.
type Calls = BTreeMap<String, BTreeSet<String>>;

/// The name of the receiver `before` ends with: `x` of `x.op()`, `ctx.aws.x\n.op()` and
/// `x().op()`; empty for anything else (`request().op()`, `foo?.op()`).
fn receiver(before: &str) -> &str {
    let mut t = before.trim_end();
    if let Some(r) = t.strip_suffix(')') {
        match r.trim_end().strip_suffix('(') {
            Some(r) => t = r.trim_end(),
            None => return "",
        }
    }
    let start = t
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    &t[start..]
}

/// The actions the `files` call.
fn calls(files: &[&Source], ops: &BTreeMap<String, BTreeSet<String>>) -> Calls {
    let call = Regex::new(r"\.\s*([a-z_][a-z0-9_]*)\s*\(\s*\)").unwrap();
    // A file uses a client when it names the crate or a field/local the client goes by.
    let uses: Vec<(&Service, Regex)> = SERVICES
        .iter()
        .filter(|s| ops.contains_key(s.krate))
        .map(|s| {
            let re = format!(
                r"\baws_sdk_{}\b|\.\s*(?:{})\b",
                s.krate,
                s.receivers.join("|")
            );
            (s, Regex::new(&re).unwrap())
        })
        .collect();
    let mut out = Calls::new();
    for f in files {
        let used: Vec<&Service> = uses
            .iter()
            .filter(|(_, re)| re.is_match(&f.code))
            .map(|(s, _)| *s)
            .collect();
        for c in call.captures_iter(&f.code) {
            let whole = c.get(0).unwrap();
            let name = &c[1];
            let receiver = receiver(&f.code[..whole.start()]);
            let by_name: Vec<&Service> = SERVICES
                .iter()
                .filter(|s| s.receivers.contains(&receiver))
                .collect();
            let services: Vec<&&Service> = if by_name.is_empty() {
                used.iter()
                    .filter(|s| ops[s.krate].contains(name))
                    .collect()
            } else {
                // A named client: only its operations (else it is a getter of the same name).
                used.iter()
                    .filter(|s| {
                        by_name.iter().any(|b| b.krate == s.krate) && ops[s.krate].contains(name)
                    })
                    .collect()
            };
            let line = f.code[..whole.start()].matches('\n').count() + 1;
            for s in services {
                if let Some(a) = iam_action(s.krate, &camel(name)) {
                    out.entry(a)
                        .or_default()
                        .insert(format!("{}:{line}", f.rel));
                }
            }
        }
    }
    out
}

/// The IAM action universe: every operation of every service crate, as actions, plus the
/// implied ones.
fn universe(ops: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = ops
        .iter()
        .flat_map(|(k, names)| names.iter().filter_map(|n| iam_action(k, &camel(n))))
        .collect();
    all.extend(IMPLIED.iter().map(|i| i.action.to_owned()));
    all
}

struct Code {
    ops: BTreeMap<String, BTreeSet<String>>,
    runner_host: Calls,
    oidc: Calls,
    job_task: Calls,
}

const HELPER: &str = "stages/src/fargate/helper.rs";
const HELPER_CLI: &str = "executor/src/stage/workspace.rs";
/// Run on the runner host by an administrator, never with a job's OIDC credentials.
const DOCTOR: &str = "stages/src/doctor.rs";
/// `gc` runs from the runner host (cron), never with a job's OIDC credentials.
const GC: [&str; 2] = ["stages/src/gc.rs", "stages/src/gc/"];

fn code() -> &'static Code {
    static CODE: OnceLock<Code> = OnceLock::new();
    CODE.get_or_init(|| {
        let ops = sdk_operations();
        let all = sources(&["executor/src", "stages/src"]);
        let host: Vec<&Source> = all
            .iter()
            .filter(|s| s.rel != HELPER && s.rel != HELPER_CLI)
            .collect();
        let oidc: Vec<&Source> = host
            .iter()
            .copied()
            .filter(|s| s.rel != DOCTOR && !GC.iter().any(|g| s.rel.starts_with(g)))
            .collect();
        let task = helper_closure(&all);
        Code {
            runner_host: calls(&host, &ops),
            oidc: calls(&oidc, &ops),
            job_task: calls(&task, &ops),
            ops,
        }
    })
}

/// The helper's file and, transitively, the files defining the `crate::path::function(` it calls.
fn helper_closure(all: &[Source]) -> Vec<&Source> {
    let path_call = Regex::new(r"crate((?:::\w+)+)::(\w+)\s*\(").unwrap();
    let mut set: Vec<&Source> = all.iter().filter(|s| s.rel == HELPER).collect();
    assert_eq!(set.len(), 1, "{HELPER} not found");
    let mut i = 0;
    while i < set.len() {
        let code = set[i].code.clone();
        for c in path_call.captures_iter(&code) {
            let module = c[1].trim_start_matches("::").replace("::", "/");
            let def = Regex::new(&format!(r"\bfn\s+{}\b", &c[2])).unwrap();
            for s in all {
                let in_module = s.rel.starts_with(&format!("stages/src/{module}/"))
                    || s.rel == format!("stages/src/{module}.rs");
                if in_module && def.is_match(&s.code) && !set.iter().any(|x| x.rel == s.rel) {
                    set.push(s);
                }
            }
        }
        i += 1;
    }
    set
}

// ------------------------------------------------------------------------------------------
// The template
// ------------------------------------------------------------------------------------------

/// One granted action pattern and where it comes from.
#[derive(Debug, Clone)]
struct Grant {
    pattern: String,
    at: String,
}

fn template_path() -> PathBuf {
    std::env::var_os("SME_IAM_TEMPLATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("runner-setup/cloudformation/sagemaker-executor.yaml"))
}

fn template() -> Value {
    let p = template_path();
    serde_yaml::from_str(&std::fs::read_to_string(&p).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The logical id a `!Ref X` / `{Ref: X}` names.
fn ref_of(v: &Value) -> Option<&str> {
    match v {
        Value::Tagged(t) if t.tag == "Ref" => t.value.as_str(),
        Value::Mapping(m) => m.get("Ref").and_then(Value::as_str),
        _ => None,
    }
}

fn list(v: Option<&Value>) -> Vec<&Value> {
    match v {
        Some(Value::Sequence(s)) => s.iter().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// The Allow actions of a policy document.
fn document_grants(doc: &Value, at: &str, out: &mut Vec<Grant>) {
    let Value::Mapping(_) = doc else {
        panic!("{at}: the PolicyDocument is not a YAML mapping; tests/tests/iam.rs cannot read it");
    };
    for (n, st) in list(doc.get("Statement")).into_iter().enumerate() {
        let sid = st
            .get("Sid")
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{n}"), str::to_owned);
        assert!(
            st.get("NotAction").is_none(),
            "{at}/{sid}: NotAction cannot be checked"
        );
        if st.get("Effect").and_then(Value::as_str) != Some("Allow") {
            continue;
        }
        for a in list(st.get("Action")) {
            let a = a
                .as_str()
                .unwrap_or_else(|| panic!("{at}/{sid}: an Action that is not a string"));
            out.push(Grant {
                pattern: a.to_owned(),
                at: format!("{at}/{sid}"),
            });
        }
    }
}

/// Every action the role `role` (logical id) is granted: its inline policies, the managed
/// policies it lists, and the managed/inline policy resources that name it in `Roles`. Policies
/// with a `Condition` count as if their parameter were set.
fn role_grants(t: &Value, role: &str) -> Vec<Grant> {
    let resources = t
        .get("Resources")
        .and_then(Value::as_mapping)
        .expect("Resources");
    let r = resources
        .get(role)
        .unwrap_or_else(|| panic!("no resource {role}"));
    let mut out = Vec::new();
    let props = r.get("Properties");
    for p in list(props.and_then(|p| p.get("Policies"))) {
        let name = p.get("PolicyName").and_then(Value::as_str).unwrap_or("?");
        document_grants(
            p.get("PolicyDocument").unwrap(),
            &format!("{role}/{name}"),
            &mut out,
        );
    }
    let listed: Vec<&str> = list(props.and_then(|p| p.get("ManagedPolicyArns")))
        .into_iter()
        .filter_map(ref_of)
        .collect();
    for (id, res) in resources {
        let id = id.as_str().unwrap();
        let ty = res.get("Type").and_then(Value::as_str).unwrap_or("");
        if !matches!(ty, "AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy") {
            continue;
        }
        let props = res.get("Properties").unwrap();
        let attached = list(props.get("Roles"))
            .into_iter()
            .any(|v| ref_of(v) == Some(role));
        if attached || listed.contains(&id) {
            document_grants(props.get("PolicyDocument").unwrap(), id, &mut out);
        }
    }
    out
}

/// IAM's action match: case-insensitive, `*` and `?` wildcards.
fn matches(pattern: &str, action: &str) -> bool {
    let (p, a): (Vec<char>, Vec<char>) = (
        pattern.to_ascii_lowercase().chars().collect(),
        action.to_ascii_lowercase().chars().collect(),
    );
    // Glob matching with backtracking to the last `*`.
    let (mut i, mut j, mut star) = (0, 0, None);
    while j < a.len() {
        if i < p.len() && (p[i] == '?' || p[i] == a[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

// ------------------------------------------------------------------------------------------
// The comparison
// ------------------------------------------------------------------------------------------

/// Every difference between what `principal` calls and what it is granted, one line each.
fn compare(
    principal: &str,
    called: &Calls,
    grants: &[Grant],
    universe: &BTreeSet<String>,
) -> Vec<String> {
    let mut diffs = Vec::new();
    let is_called = |a: &str| called.keys().any(|c| c.eq_ignore_ascii_case(a));
    let granted = |a: &str| grants.iter().any(|g| matches(&g.pattern, a));
    // Code -> template.
    for (action, at) in called {
        let by_token = TOKEN_AUTHENTICATED
            .iter()
            .any(|t| t.eq_ignore_ascii_case(action));
        if !by_token && !granted(action) {
            let at: Vec<&str> = at.iter().map(String::as_str).collect();
            diffs.push(format!(
                "{principal}: the template lacks {action} (called at {})",
                at.join(", ")
            ));
        }
    }
    for i in IMPLIED.iter().filter(|i| i.required) {
        let by: Vec<&&str> = i.by.iter().filter(|b| is_called(b)).collect();
        if !by.is_empty() && !granted(i.action) {
            diffs.push(format!(
                "{principal}: the template lacks {} (needed by {})",
                i.action,
                by.iter().map(|b| **b).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    // Template -> code.
    let mut reported = BTreeSet::new();
    for g in grants {
        let known_prefix = universe
            .iter()
            .any(|u| u.split(':').next() == g.pattern.split(':').next());
        let actions: Vec<String> = if g.pattern.contains(['*', '?']) {
            if !known_prefix {
                diffs.push(format!(
                    "{principal}: {} grants {} which cannot be checked (no SDK crate of the executor has that service)",
                    g.at, g.pattern
                ));
                continue;
            }
            universe
                .iter()
                .filter(|u| matches(&g.pattern, u))
                .cloned()
                .collect()
        } else {
            vec![g.pattern.clone()]
        };
        for a in actions {
            let implied_use = IMPLIED
                .iter()
                .any(|i| i.action.eq_ignore_ascii_case(&a) && i.by.iter().any(|b| is_called(b)));
            if !is_called(&a) && !implied_use && reported.insert((g.at.clone(), a.to_lowercase())) {
                diffs.push(format!(
                    "{principal}: {} grants {a} that no code path uses{}",
                    g.at,
                    if g.pattern == a {
                        String::new()
                    } else {
                        format!(" (from {})", g.pattern)
                    }
                ));
            }
        }
    }
    diffs
}

/// The differences for every principal the executor's code runs as, for the template `t`:
/// the runner host role, the GitLab OIDC role (per-job credentials: the same stages, no
/// doctor) and the job task role of the Fargate helpers.
fn check(t: &Value) -> Vec<String> {
    let code = code();
    let universe = universe(&code.ops);
    [
        ("RunnerHostRole", &code.runner_host),
        ("GitLabOidcRole", &code.oidc),
        ("JobTaskRole", &code.job_task),
    ]
    .into_iter()
    .flat_map(|(role, calls)| compare(role, calls, &role_grants(t, role), &universe))
    .collect()
}

fn table(calls: &Calls) -> String {
    calls
        .iter()
        .map(|(a, at)| format!("  {a:<45} {}", at.iter().next().map_or("", String::as_str)))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_template_grants_exactly_what_the_code_calls() {
    let code = code();
    eprintln!("runner host role calls:\n{}", table(&code.runner_host));
    eprintln!("job task role calls:\n{}", table(&code.job_task));
    // The derivation itself: a few calls every version of the executor makes.
    for a in [
        "sagemaker:CreateTrainingJob",
        "ecs:RunTask",
        "s3:PutObject",
        "logs:GetLogEvents",
    ] {
        assert!(
            code.runner_host.contains_key(a),
            "the scan no longer finds {a} on the runner host"
        );
    }
    for a in ["s3:GetObject", "s3:PutObject"] {
        assert!(
            code.job_task.contains_key(a),
            "the scan no longer finds {a} in the helper"
        );
    }
    let diffs = check(&template());
    assert!(
        diffs.is_empty(),
        "{} and the code disagree ({} differences):\n{}",
        template_path().display(),
        diffs.len(),
        diffs.join("\n")
    );
}

/// The Action list of the statement `sid` of `t` (anywhere), for editing.
fn statement_actions<'a>(t: &'a mut Value, sid: &str) -> Option<&'a mut Value> {
    match t {
        Value::Mapping(m) => {
            if m.get("Sid").and_then(Value::as_str) == Some(sid) {
                return m.get_mut("Action");
            }
            m.iter_mut().find_map(|(_, v)| statement_actions(v, sid))
        }
        Value::Sequence(s) => s.iter_mut().find_map(|v| statement_actions(v, sid)),
        Value::Tagged(tagged) => statement_actions(&mut tagged.value, sid),
        _ => None,
    }
}

#[test]
fn a_called_action_the_template_lacks_is_named() {
    let mut t = template();
    // The job task role without s3:GetObject: the helper's fetch downloads objects.
    let actions = statement_actions(
        t.get_mut("Resources")
            .unwrap()
            .get_mut("JobTaskRole")
            .unwrap(),
        "StagedWorkspaces",
    )
    .expect("JobTaskRole/StagedWorkspaces");
    let Value::Sequence(list) = actions else {
        panic!("a list of actions")
    };
    list.retain(|a| a.as_str() != Some("s3:GetObject"));
    let diffs = check(&t);
    assert!(
        diffs.iter().any(|d| d.starts_with(
            "JobTaskRole: the template lacks s3:GetObject (called at stages/src/fargate/helper.rs:"
        )),
        "{diffs:#?}"
    );
}

/// The job container of a Fargate task shares the task role with the helpers: with
/// `s3:ListBucket` a job script could list the staging prefix and find every other run's
/// unguessable prefix (workspace and file variables). Neither the helper's code nor the template
/// may bring it back.
#[test]
fn the_job_task_role_cannot_list_the_staging_bucket() {
    let listing = ["s3:ListBucket", "s3:ListBucketMultipartUploads"];
    let code = code();
    for a in listing {
        assert!(
            !code.job_task.contains_key(a),
            "the Fargate helper calls {a} at {:?}: it must fetch the objects it is named",
            code.job_task[a]
        );
    }
    let grants = role_grants(&template(), "JobTaskRole");
    for a in listing {
        let granted: Vec<&Grant> = grants.iter().filter(|g| matches(&g.pattern, a)).collect();
        assert!(
            granted.is_empty(),
            "JobTaskRole is granted {a}: {granted:?}"
        );
    }
    // And the comparison itself names a grant that comes back.
    let mut t = template();
    let actions = statement_actions(
        t.get_mut("Resources")
            .unwrap()
            .get_mut("JobTaskRole")
            .unwrap(),
        "StagedWorkspaces",
    )
    .expect("JobTaskRole/StagedWorkspaces");
    let Value::Sequence(list) = actions else {
        panic!("a list of actions")
    };
    list.push(Value::from("s3:ListBucket"));
    let diffs = check(&t);
    assert!(
        diffs.iter().any(|d| d
            == "JobTaskRole: JobTaskRole/job-task/StagedWorkspaces grants s3:ListBucket that no code path uses"),
        "{diffs:#?}"
    );
}

#[test]
fn a_granted_action_no_code_calls_is_named() {
    let mut t = template();
    let policy = t
        .get_mut("Resources")
        .unwrap()
        .get_mut("ExecutorPolicy")
        .unwrap();
    let actions =
        statement_actions(policy, "ReadTrainingJobs").expect("ExecutorPolicy/ReadTrainingJobs");
    let Value::Sequence(list) = actions else {
        panic!("a list of actions")
    };
    list.push(Value::from("sagemaker:DeleteTrainingJob"));
    list.push(Value::from("ecs:Describe*"));
    let diffs = check(&t);
    for want in [
        "RunnerHostRole: ExecutorPolicy/ReadTrainingJobs grants sagemaker:DeleteTrainingJob that no code path uses",
        // A wildcard is expanded against the service's real operations.
        "RunnerHostRole: ExecutorPolicy/ReadTrainingJobs grants ecs:DescribeContainerInstances that no code path uses (from ecs:Describe*)",
    ] {
        assert!(diffs.iter().any(|d| d == want), "no {want:?} in {diffs:#?}");
    }
    // ... and only what it adds beyond the calls: DescribeTasks is called.
    assert!(
        !diffs
            .iter()
            .any(|d| d.contains("grants ecs:DescribeTasks ")),
        "{diffs:#?}"
    );
}

#[test]
fn comments_strings_and_test_code_are_not_calls() {
    let text = r#"
// c.s3.delete_bucket() in a comment
fn f() { let _ = "c.s3.delete_bucket()"; c.s3.get_object().send(); }
#[cfg(test)]
mod tests { fn g() { c.s3.put_bucket_policy().send(); } }
"#;
    let (code, _) = strip_cfg_test(&blank(text));
    let src = Source {
        rel: "x.rs".into(),
        code,
    };
    assert!(matches("sagemaker:Describe*", "sagemaker:DescribeEndpoint"));
    assert!(matches("S3:getobject", "s3:GetObject"));
    assert!(matches("ecs:*Task?", "ecs:DescribeTasks"));
    assert!(!matches("ecs:Describe*", "ecs:ListTasks"));
    assert!(!matches("s3:GetObject", "s3:GetObjectTagging"));
    let ops = BTreeMap::from([(
        "s3".to_owned(),
        ["delete_bucket", "get_object", "put_bucket_policy"]
            .map(str::to_owned)
            .into(),
    )]);
    let got: Vec<String> = calls(&[&src], &ops).into_keys().collect();
    assert_eq!(got, ["s3:GetObject"]);
}
