//! Runs the real `bootstrap.sh` against a fake channel dir, under every POSIX shell this machine
//! has (sh, dash, busybox sh), including a PATH without bash and with only busybox tools.
//!
//! The project dir lives under a temp dir and is deleted after packing, so the only way for the
//! script to see its files, and for the test to see the script's output files, is through the
//! archives: the same round trip the container makes.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use std::{env, fs, thread};

use stages::workspace::{
    BOOTSTRAP, BOOTSTRAP_SH, ExtractLimits, JobManifest, MANIFEST, RemoteMode, SCRIPT,
    WORKSPACE_ARCHIVE, extract_tar, extract_tar_gz, pack_tree_to,
};

/// Upper bound for one bootstrap run; only reached when the bootstrap hangs (a failure).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn which(tool: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|path| {
        env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    })
}

/// How to start the bootstrap: the shell command and the PATH it runs with.
struct Shell {
    name: &'static str,
    argv: Vec<PathBuf>,
    /// `None` keeps the test's PATH.
    path: Option<PathBuf>,
    has_bash: bool,
}

/// A PATH dir with only the given tools, each a symlink to `target(tool)`.
fn tool_dir(
    dir: &Path,
    tools: &[&str],
    target: impl Fn(&str) -> Option<PathBuf>,
) -> Option<PathBuf> {
    fs::create_dir_all(dir).expect("mkdir tool dir");
    for tool in tools {
        std::os::unix::fs::symlink(target(tool)?, dir.join(tool)).expect("symlink tool");
    }
    Some(dir.to_path_buf())
}

const MINIMAL_TOOLS: &[&str] = &["sh", "tar", "gzip", "cat", "mkdir", "sleep"];

/// Every shell variant available here. `sh` is always there; the others are skipped (with a
/// note) when not installed.
fn shells(scratch: &Path) -> Vec<Shell> {
    let mut out = Vec::new();
    let sh = which("sh").expect("sh is required");
    out.push(Shell {
        name: "sh",
        argv: vec![sh.clone()],
        path: None,
        has_bash: which("bash").is_some(),
    });
    if let Some(dash) = which("dash") {
        out.push(Shell {
            name: "dash",
            argv: vec![dash],
            path: None,
            has_bash: which("bash").is_some(),
        });
    } else {
        eprintln!("note: dash is not installed; skipping the dash variant");
    }
    // No bash: only sh, tar, gzip, cat, mkdir (and sleep for the signal test).
    if let Some(path) = tool_dir(&scratch.join("minimal-bin"), MINIMAL_TOOLS, which) {
        out.push(Shell {
            name: "sh without bash",
            argv: vec![path.join("sh")],
            path: Some(path),
            has_bash: false,
        });
    }
    match which("busybox") {
        Some(busybox) => {
            let path = tool_dir(&scratch.join("busybox-bin"), MINIMAL_TOOLS, |_| {
                Some(busybox.clone())
            })
            .expect("busybox tool dir");
            out.push(Shell {
                name: "busybox",
                argv: vec![path.join("sh")],
                path: Some(path),
                has_bash: false,
            });
        }
        None => eprintln!("note: busybox is not installed; skipping the busybox variant"),
    }
    out
}

struct Channel {
    _dir: tempfile::TempDir,
    base: PathBuf,
    project: PathBuf,
    tmp: PathBuf,
    channel: PathBuf,
    output: PathBuf,
    failure: PathBuf,
}

impl Channel {
    fn new(script: &str, mode: RemoteMode) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = fs::canonicalize(dir.path()).expect("canonical");
        let project = base.join("builds/5/group/project");
        let tmp = base.join("builds/5/group/project.tmp");
        let channel = base.join("channel");
        let output = base.join("output/data");
        let failure = base.join("output/failure");
        fs::create_dir_all(project.join("src")).expect("mkdir");
        fs::write(project.join("src/input.txt"), b"input\n").expect("write");
        fs::create_dir_all(&tmp).expect("mkdir tmp");
        fs::write(tmp.join("vars"), b"FILE_VAR=1\n").expect("write vars");
        fs::create_dir_all(&channel).expect("mkdir channel");

        let archive = fs::File::create(channel.join(WORKSPACE_ARCHIVE)).expect("create archive");
        pack_tree_to(&[project.clone(), tmp.clone()], archive, 1).expect("pack");
        fs::remove_dir_all(base.join("builds")).expect("remove the local tree");

        fs::write(channel.join(SCRIPT), script).expect("write script");
        fs::write(channel.join(BOOTSTRAP), BOOTSTRAP_SH).expect("write bootstrap");
        let manifest = JobManifest {
            project_dir: project.clone(),
            mode,
            output_dir: Some(output.clone()),
            failure_file: Some(failure.clone()),
        };
        fs::write(channel.join(MANIFEST), manifest.render().expect("manifest"))
            .expect("write manifest");
        Self {
            _dir: dir,
            base,
            project,
            tmp,
            channel,
            output,
            failure,
        }
    }

    fn command(&self, shell: &Shell) -> Command {
        let mut command = Command::new(&shell.argv[0]);
        command
            .args(&shell.argv[1..])
            .arg(self.channel.join(BOOTSTRAP))
            .arg(&self.channel)
            // Its own process group, as PID 1 of a container has: the SIGTERM forwarding
            // signals the group, which must not include this test runner.
            .process_group(0);
        if let Some(path) = &shell.path {
            command.env("PATH", path);
        }
        command
    }

    fn run(&self, shell: &Shell) -> Output {
        self.run_with(shell, |_| {})
    }

    /// `run` with extra settings on the command (environment, PATH).
    fn run_with(&self, shell: &Shell, configure: impl FnOnce(&mut Command)) -> Output {
        let mut command = self.command(shell);
        configure(&mut command);
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bootstrap");
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(RUN_TIMEOUT) {
            Ok(output) => output.expect("bootstrap output"),
            Err(_) => {
                kill_group(pid, "KILL");
                panic!("bootstrap under {} did not finish", shell.name);
            }
        }
    }

    /// Restores what the bootstrap returned into the (deleted) local tree, as the executor does.
    fn restore_returned(&self, mode: RemoteMode) -> Vec<String> {
        let _ = fs::remove_dir_all(self.base.join("builds"));
        let roots = [self.project.clone(), self.tmp.clone()];
        let summary = match mode {
            RemoteMode::SageMaker => {
                let file =
                    fs::File::open(self.output.join("workspace.tar")).expect("workspace.tar");
                extract_tar(file, &roots, &ExtractLimits::default())
            }
            RemoteMode::Ecs => {
                let file =
                    fs::File::open(self.output.join("workspace.tar.gz")).expect("workspace.tar.gz");
                extract_tar_gz(file, &roots, &ExtractLimits::default())
            }
        }
        .expect("extract returned workspace");
        summary.skipped
    }

    fn failure_text(&self) -> Option<String> {
        fs::read_to_string(&self.failure).ok()
    }
}

fn kill_group(pid: u32, signal: &str) {
    let _ = Command::new("sh")
        .args([
            "-c",
            "kill -s \"$1\" -- \"-$2\" 2>/dev/null || kill -s \"$1\" \"$2\"",
            "sh",
        ])
        .arg(signal)
        .arg(pid.to_string())
        .status();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const SUCCESS_SCRIPT: &str = r#"set -e
test "$(cat src/input.txt)" = input
test "$(cat ../project.tmp/vars)" = FILE_VAR=1
echo "built" > output.txt
mkdir -p dist && echo artifact > dist/app.bin
if [ -n "${BASH_VERSION:-}" ]; then echo bash > shell.txt; else echo sh > shell.txt; fi
echo "script says hello"
echo "script warns" >&2
"#;

#[test]
fn successful_script_returns_its_changes_and_exits_zero() {
    let scratch = tempfile::tempdir().expect("scratch");
    for shell in shells(scratch.path()) {
        let channel = Channel::new(SUCCESS_SCRIPT, RemoteMode::SageMaker);
        let output = channel.run(&shell);
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "[{}] stdout:\n{stdout}\nstderr:\n{stderr}",
            shell.name
        );
        assert!(
            stdout.contains("script says hello"),
            "[{}] {stdout}",
            shell.name
        );
        assert!(stderr.contains("script warns"), "[{}] {stderr}", shell.name);
        assert!(
            stdout.contains("[sagemaker-executor] restoring the workspace"),
            "[{}] {stdout}",
            shell.name
        );
        assert!(
            stdout.contains("[sagemaker-executor] packed the workspace"),
            "[{}] {stdout}",
            shell.name
        );
        if shell.path.is_none() {
            // ls is on the full PATH, so byte counts are shown.
            assert!(stdout.contains(" bytes)"), "[{}] {stdout}", shell.name);
        }
        assert_eq!(channel.failure_text(), None, "[{}]", shell.name);

        let skipped = channel.restore_returned(RemoteMode::SageMaker);
        assert!(skipped.is_empty(), "[{}] {skipped:?}", shell.name);
        let read = |rel: &str| fs::read_to_string(channel.project.join(rel)).ok();
        assert_eq!(
            read("output.txt").as_deref(),
            Some("built\n"),
            "[{}]",
            shell.name
        );
        assert_eq!(
            read("dist/app.bin").as_deref(),
            Some("artifact\n"),
            "[{}]",
            shell.name
        );
        assert_eq!(
            read("src/input.txt").as_deref(),
            Some("input\n"),
            "[{}]",
            shell.name
        );
        let expected_shell = if shell.has_bash { "bash\n" } else { "sh\n" };
        assert_eq!(
            read("shell.txt").as_deref(),
            Some(expected_shell),
            "[{}]",
            shell.name
        );
        if !shell.has_bash {
            assert!(
                stdout.contains("bash is not installed"),
                "[{}] {stdout}",
                shell.name
            );
        }
        assert!(
            channel.tmp.join("vars").is_file(),
            "[{}] .tmp sibling not returned",
            shell.name
        );
    }
}

#[test]
fn failing_script_writes_the_failure_file_and_keeps_its_status() {
    let scratch = tempfile::tempdir().expect("scratch");
    for shell in shells(scratch.path()) {
        let channel = Channel::new(
            "echo partial > partial.txt\nexit 3\n",
            RemoteMode::SageMaker,
        );
        let output = channel.run(&shell);
        assert_eq!(
            output.status.code(),
            Some(3),
            "[{}] {}",
            shell.name,
            text(&output.stdout)
        );
        assert_eq!(
            channel.failure_text().as_deref(),
            Some("sagemaker-executor: script exited with status 3\n"),
            "[{}]",
            shell.name
        );
        channel.restore_returned(RemoteMode::SageMaker);
        assert!(
            channel.project.join("partial.txt").is_file(),
            "[{}] partial output lost",
            shell.name
        );
    }
}

#[test]
fn broken_archive_fails_before_running_the_script() {
    let scratch = tempfile::tempdir().expect("scratch");
    for shell in shells(scratch.path()) {
        let channel = Channel::new("echo ran > ran.txt\n", RemoteMode::SageMaker);
        fs::write(
            channel.channel.join(WORKSPACE_ARCHIVE),
            b"not a gzip stream",
        )
        .expect("corrupt");
        let output = channel.run(&shell);
        assert_eq!(output.status.code(), Some(1), "[{}]", shell.name);
        let failure = channel.failure_text().unwrap_or_default();
        assert!(
            failure.starts_with("sagemaker-executor: restoring the workspace failed"),
            "[{}] {failure}",
            shell.name
        );
        assert!(
            !channel.project.join("ran.txt").exists(),
            "[{}] the script ran",
            shell.name
        );
        assert!(
            !channel.output.join("workspace.tar").exists(),
            "[{}]",
            shell.name
        );
    }
}

#[test]
fn manifest_is_parsed_not_sourced() {
    let scratch = tempfile::tempdir().expect("scratch");
    let shell = shells(scratch.path()).remove(0);
    let channel = Channel::new("echo ok > ok.txt\n", RemoteMode::SageMaker);
    let pwned = channel.base.join("pwned");
    let mut manifest = fs::read_to_string(channel.channel.join(MANIFEST)).expect("manifest");
    manifest.push_str(&format!(
        "# comment\nUNKNOWN_KEY=1\n$(touch {})\ntouch {}\n",
        pwned.display(),
        pwned.display()
    ));
    fs::write(channel.channel.join(MANIFEST), manifest).expect("write manifest");
    let output = channel.run(&shell);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    assert!(!pwned.exists(), "a manifest line was executed");
}

#[test]
fn ecs_mode_returns_a_gzipped_archive() {
    let scratch = tempfile::tempdir().expect("scratch");
    let shell = shells(scratch.path()).remove(0);
    let channel = Channel::new("echo ecs > ecs.txt\n", RemoteMode::Ecs);
    let output = channel.run(&shell);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    channel.restore_returned(RemoteMode::Ecs);
    assert_eq!(
        fs::read_to_string(channel.project.join("ecs.txt")).expect("ecs.txt"),
        "ecs\n"
    );
}

/// Waits until a `sleep` process runs in process group `pgid` (the bootstrap's).
fn wait_for_sleep_in_group(pgid: u32, shell: &str) {
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    loop {
        let found = fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
                    // "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after ')'.
                    let comm_ok = stat.contains("(sleep)");
                    let pgrp = stat
                        .rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(2).map(str::to_owned));
                    comm_ok && pgrp.as_deref() == Some(pgid.to_string().as_str())
                })
            });
        if found {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "[{shell}] the script's sleep never started"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// The script announces itself, then blocks in a foreground child; only a SIGTERM delivered to
/// that child too (the process group) lets the script's own trap run.
const SIGTERM_SCRIPT: &str = r#"trap 'echo stopped > got-term.txt; exit 143' TERM
echo started > started.txt
echo ready
sleep 600
echo never > never.txt
"#;

#[test]
fn sigterm_is_forwarded_and_the_workspace_still_packed() {
    let scratch = tempfile::tempdir().expect("scratch");
    for shell in shells(scratch.path()) {
        let channel = Channel::new(SIGTERM_SCRIPT, RemoteMode::SageMaker);
        let mut child = channel
            .command(&shell)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bootstrap");
        let pid = child.id();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr_reader = thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });

        // Wait for the readiness line (not a fixed sleep), with a watchdog against hangs.
        let (ready_tx, ready_rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut seen = String::new();
            let mut line = String::new();
            while stdout.read_line(&mut line).unwrap_or(0) > 0 {
                if line.trim_end() == "ready" {
                    let _ = ready_tx.send(());
                }
                seen.push_str(&line);
                line.clear();
            }
            let mut rest = String::new();
            let _ = stdout.read_to_string(&mut rest);
            seen + &rest
        });
        if ready_rx.recv_timeout(RUN_TIMEOUT).is_err() {
            kill_group(pid, "KILL");
            panic!("[{}] the script never became ready", shell.name);
        }

        // "ready" is printed just before the script forks `sleep`; a signal in between would
        // miss the sleep and leave the script's trap waiting on it. Wait for that state.
        wait_for_sleep_in_group(pid, shell.name);

        // Like `docker stop`: SIGTERM to the bootstrap (PID 1) only.
        let sent = Command::new("sh")
            .args(["-c", "kill -s TERM \"$1\"", "sh"])
            .arg(pid.to_string())
            .status()
            .expect("send SIGTERM");
        assert!(sent.success());

        let (done_tx, done_rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        let status = match done_rx.recv_timeout(RUN_TIMEOUT) {
            Ok(status) => status.expect("wait"),
            Err(_) => {
                kill_group(pid, "KILL");
                panic!("[{}] the bootstrap did not stop after SIGTERM", shell.name);
            }
        };
        let stdout = reader.join().expect("reader");
        let stderr = stderr_reader.join().expect("stderr reader");
        assert_eq!(
            status.code(),
            Some(143),
            "[{}] {stdout}\n{stderr}",
            shell.name
        );
        assert!(
            stdout.contains("SIGTERM received"),
            "[{}] {stdout}",
            shell.name
        );
        let failure = channel.failure_text().unwrap_or_default();
        assert!(
            failure.contains("stopped (SIGTERM)"),
            "[{}] {failure}",
            shell.name
        );

        channel.restore_returned(RemoteMode::SageMaker);
        assert!(
            channel.project.join("started.txt").is_file(),
            "[{}] nothing packed",
            shell.name
        );
        assert!(
            channel.project.join("got-term.txt").is_file(),
            "[{}] the script's trap did not run",
            shell.name
        );
        assert!(
            !channel.project.join("never.txt").exists(),
            "[{}]",
            shell.name
        );
    }
}

/// A fake SageMaker `/opt/ml` for host algo-2 of a two-host job with channels `train` and
/// `eval` (plus the workspace channel) and hyperparameters, laid out the way SageMaker writes it
/// (compact JSON, resourceconfig.json with a nested `instance_groups` that also has `hosts`).
/// The bootstrap is pointed at it with the job.env key `SME_ML_ROOT`.
fn fake_opt_ml(channel: &Channel) -> PathBuf {
    let ml = channel.base.join("ml");
    let config = ml.join("input/config");
    fs::create_dir_all(&config).expect("mkdir config");
    for dir in [
        "input/data/sm-workspace",
        "input/data/eval",
        "model",
        "output/data",
    ] {
        fs::create_dir_all(ml.join(dir)).expect("mkdir ml dir");
    }
    fs::create_dir_all(ml.join("input/data/train")).expect("mkdir train");
    fs::write(ml.join("input/data/train/rows.csv"), b"a,b\n1,2\n").expect("write rows");
    fs::write(
        config.join("resourceconfig.json"),
        r#"{"current_host":"algo-2","current_instance_type":"ml.m5.xlarge","current_group_name":"homogeneousCluster","hosts":["algo-1","algo-2"],"instance_groups":[{"instance_group_name":"homogeneousCluster","instance_type":"ml.m5.xlarge","hosts":["algo-2","algo-1"]}],"network_interface_name":"eth0"}"#,
    )
    .expect("write resourceconfig");
    // Channel order as in the request; SM_CHANNELS is sorted.
    fs::write(
        config.join("inputdataconfig.json"),
        concat!(
            "{\n  \"sm-workspace\": {\"TrainingInputMode\": \"File\", \"S3DistributionType\": \"FullyReplicated\", \"RecordWrapperType\": \"None\"},\n",
            "  \"train\": {\"TrainingInputMode\": \"File\", \"S3DistributionType\": \"FullyReplicated\", \"RecordWrapperType\": \"None\"},\n",
            "  \"eval\": {\"ContentType\": \"text/csv\", \"TrainingInputMode\": \"File\", \"S3DistributionType\": \"FullyReplicated\", \"RecordWrapperType\": \"None\"}\n}\n"
        ),
    )
    .expect("write inputdataconfig");
    // Values are strings, as SageMaker requires; the toolkit JSON-decodes them when it can.
    fs::write(
        config.join("hyperparameters.json"),
        r#"{"epochs": "3", "message": "say \"hi\" to all", "optimizer": "\"adam\"", "learning-rate": "0.01", "sagemaker_program": "train.py"}"#,
    )
    .expect("write hyperparameters");
    let mut manifest = fs::read_to_string(channel.channel.join(MANIFEST)).expect("manifest");
    manifest.push_str(&format!("SME_ML_ROOT={}\n", ml.display()));
    fs::write(channel.channel.join(MANIFEST), manifest).expect("write manifest");
    ml
}

/// A PATH dir holding a fake `nvidia-smi` that lists two GPUs.
fn fake_gpu_dir(scratch: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch.join("gpu-bin");
    if !dir.is_dir() {
        fs::create_dir_all(&dir).expect("mkdir gpu-bin");
        let tool = dir.join("nvidia-smi");
        fs::write(
            &tool,
            "#!/bin/sh\n[ \"$1\" = --list-gpus ] || exit 2\necho 'GPU 0: Tesla T4 (UUID: GPU-0)'\necho 'GPU 1: Tesla T4 (UUID: GPU-1)'\n",
        )
        .expect("write nvidia-smi");
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Online CPUs as Python's os.cpu_count() (the toolkit's source) sees them.
fn cpuinfo_processors() -> usize {
    fs::read_to_string("/proc/cpuinfo")
        .expect("/proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor") && l.contains(':'))
        .count()
}

/// Writes each variable to `env/<name>` in the project dir (which comes back through the
/// returned workspace), uses the model dir and a data channel, and lists what is exported.
const TRAINING_ENV_SCRIPT: &str = r#"set -e
mkdir -p env
for name in SM_MODEL_DIR SM_INPUT_DIR SM_INPUT_CONFIG_DIR SM_OUTPUT_DIR SM_OUTPUT_DATA_DIR \
    SM_CHANNELS SM_CHANNEL_TRAIN SM_CHANNEL_EVAL SM_HOSTS SM_CURRENT_HOST SM_NUM_HOSTS SM_HPS \
    SM_HP_EPOCHS SM_HP_MESSAGE SM_HP_OPTIMIZER SM_USER_ARGS SM_NUM_CPUS SM_NUM_GPUS \
    SM_NETWORK_INTERFACE_NAME SM_CURRENT_INSTANCE_TYPE SM_TRAINING_ENV; do
    eval "value=\${$name-unset}"
    printf '%s' "$value" > "env/$name"
done
export -p > exported.txt
cat "$SM_CHANNEL_TRAIN/rows.csv" > seen-rows.csv
echo weights > "$SM_MODEL_DIR/model.bin"
SM_NUM_GPUS=override
echo "$SM_NUM_GPUS" > override.txt
"#;

#[test]
fn sagemaker_mode_exports_the_training_toolkit_environment() {
    let scratch = tempfile::tempdir().expect("scratch");
    let gpu_dir = fake_gpu_dir(scratch.path());
    let cpus = cpuinfo_processors().to_string();
    for shell in shells(scratch.path()) {
        let channel = Channel::new(TRAINING_ENV_SCRIPT, RemoteMode::SageMaker);
        let ml = fake_opt_ml(&channel);
        let base_path = shell
            .path
            .clone()
            .map(std::ffi::OsString::from)
            .or_else(|| env::var_os("PATH"))
            .unwrap_or_default();
        let mut path = gpu_dir.clone().into_os_string();
        path.push(":");
        path.push(&base_path);
        let output = channel.run_with(&shell, |command| {
            // A stale value from the image's environment: the toolkit's value wins.
            command.env("PATH", &path).env("SM_CURRENT_HOST", "stale");
        });
        let stdout = text(&output.stdout);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(0),
            "[{}] stdout:\n{stdout}\nstderr:\n{stderr}",
            shell.name
        );
        channel.restore_returned(RemoteMode::SageMaker);
        let var = |name: &str| {
            fs::read_to_string(channel.project.join("env").join(name))
                .unwrap_or_else(|e| panic!("[{}] {name}: {e}\n{stdout}", shell.name))
        };
        let ml_s = ml.display().to_string();
        let n = shell.name;
        assert_eq!(var("SM_MODEL_DIR"), format!("{ml_s}/model"), "[{n}]");
        assert_eq!(var("SM_INPUT_DIR"), format!("{ml_s}/input"), "[{n}]");
        assert_eq!(
            var("SM_INPUT_CONFIG_DIR"),
            format!("{ml_s}/input/config"),
            "[{n}]"
        );
        assert_eq!(var("SM_OUTPUT_DIR"), format!("{ml_s}/output"), "[{n}]");
        assert_eq!(
            var("SM_OUTPUT_DATA_DIR"),
            format!("{ml_s}/output/data"),
            "[{n}]"
        );
        assert_eq!(
            var("SM_CHANNELS"),
            r#"["eval","sm-workspace","train"]"#,
            "[{n}]"
        );
        assert_eq!(
            var("SM_CHANNEL_TRAIN"),
            format!("{ml_s}/input/data/train"),
            "[{n}]"
        );
        assert_eq!(
            var("SM_CHANNEL_EVAL"),
            format!("{ml_s}/input/data/eval"),
            "[{n}]"
        );
        assert_eq!(var("SM_HOSTS"), r#"["algo-1","algo-2"]"#, "[{n}]");
        assert_eq!(var("SM_CURRENT_HOST"), "algo-2", "[{n}]");
        assert_eq!(var("SM_NUM_HOSTS"), "2", "[{n}]");
        assert_eq!(
            var("SM_HPS"),
            r#"{"epochs":3,"learning-rate":0.01,"message":"say \"hi\" to all","optimizer":"adam"}"#,
            "[{n}]"
        );
        assert_eq!(var("SM_HP_EPOCHS"), "3", "[{n}]");
        assert_eq!(var("SM_HP_MESSAGE"), r#"say "hi" to all"#, "[{n}]");
        assert_eq!(var("SM_HP_OPTIMIZER"), "adam", "[{n}]");
        assert_eq!(
            var("SM_USER_ARGS"),
            r#"["--epochs","3","--learning-rate","0.01","--message","say \"hi\" to all","--optimizer","adam"]"#,
            "[{n}]"
        );
        assert_eq!(var("SM_NUM_CPUS"), cpus, "[{n}]");
        assert_eq!(var("SM_NUM_GPUS"), "2", "[{n}]");
        assert_eq!(var("SM_NETWORK_INTERFACE_NAME"), "eth0", "[{n}]");
        assert_eq!(var("SM_CURRENT_INSTANCE_TYPE"), "ml.m5.xlarge", "[{n}]");
        let training_env: serde_json::Value =
            serde_json::from_str(&var("SM_TRAINING_ENV")).expect("SM_TRAINING_ENV is JSON");
        assert_eq!(training_env["current_host"], "algo-2", "[{n}]");
        assert_eq!(
            training_env["hosts"],
            serde_json::json!(["algo-1", "algo-2"]),
            "[{n}]"
        );
        assert_eq!(training_env["master_hostname"], "algo-1", "[{n}]");
        assert_eq!(training_env["is_master"], false, "[{n}]");
        assert_eq!(
            training_env["hyperparameters"]["message"], r#"say "hi" to all"#,
            "[{n}]"
        );
        assert_eq!(
            training_env["channel_input_dirs"]["train"],
            format!("{ml_s}/input/data/train"),
            "[{n}]"
        );
        assert_eq!(
            training_env["input_data_config"]["eval"]["ContentType"], "text/csv",
            "[{n}]"
        );
        assert_eq!(
            training_env["resource_config"]["current_instance_type"], "ml.m5.xlarge",
            "[{n}]"
        );
        // No variable for the framework parameter, nor for names a shell cannot export.
        let exported = fs::read_to_string(channel.project.join("exported.txt")).expect("exported");
        assert!(
            !exported.contains("SM_HP_SAGEMAKER_PROGRAM"),
            "[{n}] {exported}"
        );
        assert!(!exported.contains("SM_CHANNEL_SM"), "[{n}] {exported}");
        assert!(
            stdout.contains("hyperparameter 'learning-rate' has no SM_HP_ variable"),
            "[{n}] {stdout}"
        );
        // The script reads a channel and writes the model; it can still override a variable.
        assert_eq!(
            fs::read_to_string(channel.project.join("seen-rows.csv")).expect("seen-rows"),
            "a,b\n1,2\n",
            "[{n}]"
        );
        assert_eq!(
            fs::read_to_string(ml.join("model/model.bin")).expect("model.bin"),
            "weights\n",
            "[{n}]"
        );
        assert_eq!(
            fs::read_to_string(channel.project.join("override.txt")).expect("override"),
            "override\n",
            "[{n}]"
        );
    }
}

#[test]
fn sagemaker_mode_without_config_files_or_gpus_still_runs() {
    let scratch = tempfile::tempdir().expect("scratch");
    let shell = shells(scratch.path()).remove(0);
    let channel = Channel::new(
        "printf '%s|%s|%s|%s' \"$SM_HOSTS\" \"$SM_CHANNELS\" \"$SM_HPS\" \"$SM_NUM_GPUS\" > env.txt\n",
        RemoteMode::SageMaker,
    );
    let ml = channel.base.join("empty-ml");
    let mut manifest = fs::read_to_string(channel.channel.join(MANIFEST)).expect("manifest");
    manifest.push_str(&format!("SME_ML_ROOT={}\n", ml.display()));
    fs::write(channel.channel.join(MANIFEST), manifest).expect("write manifest");
    let output = channel.run_with(&shell, |command| {
        // No nvidia-smi anywhere.
        command.env(
            "PATH",
            tool_dir(&scratch.path().join("no-gpu"), MINIMAL_TOOLS, which).expect("tools"),
        );
    });
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(
        stdout.contains("resourceconfig.json is missing"),
        "{stdout}"
    );
    channel.restore_returned(RemoteMode::SageMaker);
    assert_eq!(
        fs::read_to_string(channel.project.join("env.txt")).expect("env.txt"),
        "[]|[]|{}|0"
    );
}

#[test]
fn ecs_mode_exports_no_sagemaker_variables() {
    let scratch = tempfile::tempdir().expect("scratch");
    let shell = shells(scratch.path()).remove(0);
    let channel = Channel::new("export -p > exported.txt\n", RemoteMode::Ecs);
    let output = channel.run(&shell);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stdout));
    channel.restore_returned(RemoteMode::Ecs);
    let exported = fs::read_to_string(channel.project.join("exported.txt")).expect("exported");
    assert!(!exported.contains("SM_"), "{exported}");
    assert!(!text(&output.stdout).contains("SageMaker training environment"));
}
