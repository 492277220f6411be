//! What the fuzz targets share: a fixed executor config and job, the input decoders, and the
//! properties each target asserts (a failed assertion is a crash libFuzzer reports).

use std::path::{Path, PathBuf};
use std::time::Duration;

use stages::config::ExecutorConfig;
use stages::job::{Job, Variable, Variables};

/// The executor config every resolver input is checked against: every action allowed, a
/// restrictive train policy, a Fargate environment, and register and ECS limits.
pub const CONFIG: &str = r#"
region = "us-east-1"
[paths]
builds_root = "/b"
cache_root = "/c"
[staging]
bucket = "ci-staging"
[train]
role_arn = "arn:aws:iam::123456789012:role/SageMakerCI"
[fargate]
cluster = "ci"
subnets = ["subnet-0123456789abcdef0"]
security_groups = ["sg-0123456789abcdef0"]
execution_role_arn = "arn:aws:iam::123456789012:role/exec"
helper_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/helper:1"
[policy]
allowed_actions = ["train", "fargate", "register", "deploy", "undeploy", "ecs-deploy"]
protected_ref_actions = ["deploy", "undeploy"]
[policy.train]
instance_types = ["ml.m5.*", "ml.g5.*"]
max_instance_count = 4
max_runtime = "6h"
max_keep_alive = "30m"
buckets = ["ci-staging", "ml-data-*"]
roles = ["arn:aws:iam::123456789012:role/SageMaker*"]
[policy.fargate]
images = ["docker.io/library/python:*", "*.dkr.ecr.*.amazonaws.com/**"]
[policy.register]
groups = ["ml-*"]
[policy.ecs_deploy]
clusters = ["ci"]
services = ["web-*"]
images = ["*.dkr.ecr.*.amazonaws.com/**"]
"#;

/// The parsed [`CONFIG`].
pub fn config() -> ExecutorConfig {
    match stages::config::load_str(CONFIG, Path::new("fuzz.toml")) {
        Ok(c) => c,
        Err(e) => panic!("the fuzz config must load: {e}"),
    }
}

/// Setting names the resolver reads (the core's own list), so short inputs can name them by a
/// number.
static NAMES: std::sync::LazyLock<Vec<&'static str>> =
    std::sync::LazyLock::new(|| stages::settings::known_names().collect());

/// A job from fuzz input: one `KEY=value` per line; a key `#N` stands for the N-th known
/// setting name of [`stages::settings::known_names`] (a prefix such as `SAGEMAKER_TAG_` takes
/// the rest of the key after a space); `image=` sets the job's image and `protected=` its ref protection.
pub fn job(text: &str) -> Job {
    let mut vars = Vec::new();
    let mut image = None;
    let mut protected = false;
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = match key.strip_prefix('#') {
            Some(rest) => {
                let (index, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                match index.parse::<usize>() {
                    Ok(i) => format!("{}{tail}", NAMES[i % NAMES.len()]),
                    Err(_) => key.to_owned(),
                }
            }
            None => key.to_owned(),
        };
        match key.as_str() {
            "image" => image = Some(value.to_owned()),
            "protected" => protected = value == "1",
            _ => vars.push((
                key,
                Variable {
                    value: value.to_owned(),
                    masked: false,
                    file: false,
                },
            )),
        }
    }
    Job {
        id: 42,
        name: "fuzz".into(),
        project_id: 7,
        project_path: "ml/fuzz".into(),
        pipeline_id: 3,
        url: "https://gitlab.example.com/ml/fuzz/-/jobs/42".into(),
        git_ref: "main".into(),
        sha: "0123456789abcdef".into(),
        ref_protected: protected,
        default_branch: Some("main".into()),
        image,
        timeout: Duration::from_secs(3600),
        variables: Variables::new(vars),
    }
}

/// Longest error line a refusal may print, in characters: the setting (120) and the reason
/// (600), shortened with `…`, and the separator.
pub const MAX_REJECTION_CHARS: usize = 120 + 1 + 2 + 600 + 1;

/// Asserts that every refusal is one printable line of bounded length.
pub fn check_rejections(problems: &[stages::policy::Rejection]) {
    assert!(!problems.is_empty(), "a refusal names at least one setting");
    for p in problems {
        let line = p.to_string();
        assert!(
            !line.chars().any(char::is_control),
            "control character in {line:?}"
        );
        assert!(
            line.chars().count() <= MAX_REJECTION_CHARS,
            "{} characters: {line:?}",
            line.chars().count()
        );
    }
}

/// Resolves `job` (with an optional parsed spec) against [`config`] and checks the refusals.
pub fn resolve_and_check(job: &Job, spec: Option<&stages::settings::Spec>, cfg: &ExecutorConfig) {
    use stages::settings::{JobShape, Settings, resolve};
    let settings = Settings::collect(job, spec.map(|s| ("spec.yaml", s)));
    if let Err(problems) = resolve(job, JobShape::default(), cfg, &settings) {
        check_rejections(&problems);
    }
}

/// GitLab's dotenv rules, as the executor promises them: at most 5000 bytes, every line
/// `KEY=value` with a non-empty `[A-Za-z0-9_]` key of at most 255, no line breaks in values.
pub fn check_dotenv(text: &str) {
    assert!(text.len() <= 5000, "{} bytes", text.len());
    assert!(text.is_empty() || text.ends_with('\n'), "{text:?}");
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            panic!("no `=` in {line:?}");
        };
        assert!(
            (1..=255).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "bad key in {line:?}"
        );
        assert!(!value.contains(['\r', '\n']), "line break in {line:?}");
    }
}

/// Decodes dotenv pairs: lines of `key\tvalue` (a value may hold `\r` and other bytes).
pub fn pairs(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .map(|l| {
            let (k, v) = l.split_once('\t').unwrap_or((l, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The fixed place the tar target extracts into: member names can only aim at a path the
/// fuzzer can learn, so it is the same for every input (one fuzzing process at a time).
pub const TAR_BASE: &str = "/tmp/sagemaker-executor-fuzz-tar";

/// The extraction sandbox: `<base>/builds/1/g/p` and its `.tmp` sibling as the allowed roots,
/// `<base>/outside/secret` as the file that must stay untouched.
pub struct TarSandbox {
    /// `TAR_BASE`.
    pub base: PathBuf,
    /// The allowed roots.
    pub roots: Vec<PathBuf>,
}

/// What `outside/secret` holds.
const SECRET: &[u8] = b"runner host secret\n";

impl TarSandbox {
    /// A fresh sandbox (anything left from the previous input is removed).
    pub fn fresh() -> TarSandbox {
        let base = PathBuf::from(TAR_BASE);
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("outside")).expect("sandbox");
        std::fs::create_dir_all(base.join("builds/1/g")).expect("sandbox");
        std::fs::write(base.join("outside/secret"), SECRET).expect("sandbox");
        let roots = vec![base.join("builds/1/g/p"), base.join("builds/1/g/p.tmp")];
        TarSandbox { base, roots }
    }

    /// Asserts that nothing was written outside the roots: the base holds only the roots'
    /// ancestors and `outside/secret`, unchanged, and no link under the roots resolves out.
    pub fn check(&self) {
        let outside: Vec<_> = std::fs::read_dir(self.base.join("outside"))
            .expect("outside dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(outside, ["secret"], "something appeared next to the secret");
        assert_eq!(
            std::fs::read(self.base.join("outside/secret")).expect("secret"),
            SECRET
        );
        let mut top: Vec<_> = std::fs::read_dir(&self.base)
            .expect("base")
            .map(|e| e.expect("entry").file_name())
            .collect();
        top.sort();
        assert_eq!(top, ["builds", "outside"], "written into the base");
        for dir in ["builds", "builds/1"] {
            let names: Vec<_> = std::fs::read_dir(self.base.join(dir))
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(names.len(), 1, "written into {dir}: {names:?}");
        }
        let mut g: Vec<_> = std::fs::read_dir(self.base.join("builds/1/g"))
            .expect("g")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        g.retain(|n| n != "p" && n != "p.tmp");
        assert!(g.is_empty(), "written next to the roots: {g:?}");
        for root in &self.roots {
            walk_links(root, &self.base.join("builds/1/g"));
        }
    }
}

/// Asserts that every symlink under `dir` resolves (lexically, against the tree as it is) to a
/// path under `inside`.
fn walk_links(dir: &Path, inside: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("entry");
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).expect("meta");
        if meta.file_type().is_symlink() {
            if let Ok(real) = std::fs::canonicalize(&path) {
                assert!(
                    real.starts_with(inside),
                    "{} resolves to {}",
                    path.display(),
                    real.display()
                );
            }
        } else if meta.is_dir() {
            walk_links(&path, inside);
        }
    }
}
