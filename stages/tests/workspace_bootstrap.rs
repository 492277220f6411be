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
        let child = self
            .command(shell)
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
