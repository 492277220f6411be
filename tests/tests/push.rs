//! End-to-end tests of the push paths (`[watch]`): state-change events through EventBridge and
//! SQS instead of frequent DescribeTrainingJob calls, and log lines through CloudWatch Live Tail
//! instead of frequent GetLogEvents calls, against the simulator's EventBridge delivery
//! (`tests/sim/simulator/events.py`) and Live Tail event stream (`livetail.py`).

#![allow(
    clippy::unwrap_used,
    reason = "an integration test reports failure by panicking"
)]

use e2e::harness::world::TASK_ROLE;
use e2e::harness::{ECR_IMAGE, POLICY, World, assert_outcome};
use e2e::runner::{JobOutcome, StopAction};
use std::time::Duration;

const LINES: u32 = 40;

fn job() -> String {
    format!(
        "name: train-model\nimage: {ECR_IMAGE}\nscript:\n  - for i in $(seq 1 {LINES}); do echo \"line-$i\"; sleep 1; done\nsource:\n  README.md: \"model repo\\n\"\n"
    )
}

/// Runs the training job; checks that every line appears once and in order; returns the log.
fn run_and_check(w: &World) -> String {
    run_fixture_and_check(w, &job())
}

/// Runs the job of `yaml`, whose script prints `line-1` to `line-LINES`; checks that every
/// line appears once and in order; returns the job log.
fn run_fixture_and_check(w: &World, yaml: &str) -> String {
    let result = w.runner.run(&w.fixture(yaml)).expect("job runs");
    assert_outcome(&result, JobOutcome::Success);
    let log = result.plain_log();
    let mut last = 0;
    for i in 1..=LINES {
        let needle = format!("line-{i}");
        let at: Vec<usize> = log
            .lines()
            .enumerate()
            .filter(|(_, l)| *l == needle)
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            at.len(),
            1,
            "{needle} appeared {} times in:\n{log}",
            at.len()
        );
        assert!(at[0] > last || i == 1, "{needle} out of order in:\n{log}");
        last = at[0];
    }
    log
}

#[test]
fn events_and_live_tail_deliver_every_line_once_with_far_fewer_status_and_log_calls() {
    // Polling, as without [watch].
    let polled = World::new(POLICY);
    run_and_check(&polled);
    let polled_describes = polled.count("SageMaker.DescribeTrainingJob");
    let polled_reads = polled.count("Logs.GetLogEvents");
    drop(polled);

    let w = World::new(POLICY);
    let url = w.event_queue();
    w.write_config(&w.config_text(&format!(
        "{POLICY}\n[watch]\nqueue_url = \"{url}\"\nsafety_interval = \"30s\"\nlive_tail = true\n"
    )))
    .unwrap();
    let log = run_and_check(&w);
    for warning in ["polling instead", "reading the logs by polling"] {
        assert!(!log.contains(warning), "{warning:?} in:\n{log}");
    }
    let describes = w.count("SageMaker.DescribeTrainingJob");
    let reads = w.count("Logs.GetLogEvents");
    let calls = w.calls();
    eprintln!(
        "DescribeTrainingJob {describes} (polling {polled_describes}), GetLogEvents {reads} (polling {polled_reads})"
    );
    assert!(
        calls.iter().any(|c| c == "Logs.StartLiveTail"),
        "no Live Tail session: {calls:?}"
    );
    assert!(
        calls.iter().any(|c| c == "SQS.ReceiveMessage"),
        "the queue was not read: {calls:?}"
    );
    assert!(
        describes * 2 <= polled_describes,
        "{describes} DescribeTrainingJob calls with events, {polled_describes} polling"
    );
    assert!(
        reads * 2 <= polled_reads,
        "{reads} GetLogEvents calls with Live Tail, {polled_reads} polling"
    );
}

#[test]
fn a_missing_queue_and_a_faulty_live_tail_still_deliver_every_line_once() {
    let w = World::new(POLICY);
    let (host, port) = w.sim.address();
    let missing = format!("http://{host}:{port}/123456789012/no-such-queue");
    w.write_config(&w.config_text(&format!(
        "{POLICY}\n[watch]\nqueue_url = \"{missing}\"\nlive_tail = true\n"
    )))
    .unwrap();
    // Sampled updates, an update delivered twice, one delivered late, then a dropped session.
    w.sim
        .post_json(
            "/_sim/livetail-faults",
            &serde_json::json!({"rules": [
                {"kind": "sample", "keep_every": 2, "after_updates": 8, "updates": 3},
                {"kind": "duplicate", "after_updates": 14},
                {"kind": "reorder", "after_updates": 18},
                {"kind": "drop_session", "after_updates": 24}
            ]}),
        )
        .unwrap();
    let log = run_and_check(&w);
    let warnings = log
        .lines()
        .filter(|l| l.contains("state-change events are not used"))
        .count();
    assert_eq!(warnings, 1, "one warning for the missing queue in:\n{log}");
    assert!(
        !log.contains("reading the logs by polling"),
        "Live Tail kept going in:\n{log}"
    );
    let sessions = w
        .calls()
        .iter()
        .filter(|c| *c == "Logs.StartLiveTail")
        .count();
    assert!(
        sessions >= 2,
        "a new session after the dropped one: {sessions}"
    );
}

#[test]
fn a_fargate_task_is_followed_by_its_events_and_its_lines_by_live_tail() {
    let w = World::fargate(TASK_ROLE);
    let url = w.event_queue();
    let config = std::fs::read_to_string(&w.config_path).unwrap();
    w.write_config(&format!(
        "{config}\n[watch]\nqueue_url = \"{url}\"\nsafety_interval = \"30s\"\nlive_tail = true\n"
    ))
    .unwrap();
    let log = run_fixture_and_check(
        &w,
        &format!(
            "name: fargate-job\nimage: public.ecr.aws/docker/library/alpine:3.20\nvariables:\n  SAGEMAKER_ACTION: fargate\nscript:\n  - for i in $(seq 1 {LINES}); do echo \"line-$i\"; sleep 0.5; done\nsource:\n  README.md: \"app repo\\n\"\n"
        ),
    );
    for warning in ["polling instead", "reading the logs by polling"] {
        assert!(!log.contains(warning), "{warning:?} in:\n{log}");
    }
    let calls = w.calls();
    for op in [
        "Logs.StartLiveTail",
        "SQS.ReceiveMessage",
        "SQS.DeleteMessage",
    ] {
        assert!(calls.iter().any(|c| c == op), "no {op}: {calls:?}");
    }
}

#[test]
fn sigterm_while_following_by_events_and_live_tail_stops_the_job_promptly() {
    let w = World::new(POLICY);
    let url = w.event_queue();
    w.write_config(&w.config_text(&format!(
        "{POLICY}\n[watch]\nqueue_url = \"{url}\"\nlive_tail = true\n"
    )))
    .unwrap();
    let fixture = w.fixture(&format!(
        "name: train-model\nimage: {ECR_IMAGE}\nscript:\n  - echo READY-TO-CANCEL\n  - sleep 300\nsource:\n  README.md: \"model repo\\n\"\n"
    ));
    // The line comes through Live Tail; the SIGTERM lands while a long poll is in flight.
    let result = w.run_stopped_at(
        &fixture,
        "build_script",
        "READY-TO-CANCEL",
        StopAction::Cancel,
    );
    assert_outcome(&result, JobOutcome::Canceled);
    assert_eq!(w.count("SageMaker.StopTrainingJob"), 1, "{:?}", w.calls());
    let build = result.stage("build_script").expect("build_script ran");
    assert!(
        !build.was_sent("SIGKILL"),
        "the executor exited within the grace period: {:?}",
        build.signals
    );
    assert!(
        result.plain_log().contains("was stopped"),
        "{}",
        result.plain_log()
    );
}

/// The host watcher of `w`'s executor (`watch-host` with its config), if one runs.
fn watcher_pid(w: &World) -> Option<i32> {
    let config = w.config_path.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            (args.iter().any(|a| a == "watch-host") && args.contains(&config)).then_some(pid)
        })
}

/// A world whose runner host reads a queue and follows logs with Live Tail.
fn pushed_world() -> World {
    let w = World::new(POLICY);
    let url = w.event_queue();
    w.write_config(&w.config_text(&format!(
        "{POLICY}\n[watch]\nqueue_url = \"{url}\"\nsafety_interval = \"30s\"\nlive_tail = true\n"
    )))
    .unwrap();
    w
}

#[test]
fn the_jobs_of_a_host_share_one_watcher_with_one_live_tail_session() {
    let w = pushed_world();
    let logs = std::thread::scope(|s| {
        let a = s.spawn(|| run_and_check(&w));
        let b = s.spawn(|| run_and_check(&w));
        [a.join().unwrap(), b.join().unwrap()]
    });
    for log in &logs {
        for warning in ["polling instead", "reading the logs by polling"] {
            assert!(!log.contains(warning), "{warning:?} in:\n{log}");
        }
    }
    assert_eq!(
        w.count("Logs.StartLiveTail"),
        1,
        "both jobs' lines came through the watcher's one session: {:?}",
        w.calls()
    );
    let watcher_log =
        std::fs::read_to_string(w.builds_root.join(".state").join("watcher.log")).unwrap();
    assert!(watcher_log.contains("serving"), "{watcher_log}");
    assert!(
        watcher_pid(&w).is_some(),
        "it stays for the next job while idle"
    );
}

#[test]
fn a_watcher_killed_while_jobs_wait_costs_no_line_and_the_job_goes_on_alone() {
    let w = pushed_world();
    let log = std::thread::scope(|s| {
        s.spawn(|| {
            // Once lines flow through the watcher, SIGKILL it.
            let mut pid = None;
            w.eventually("the watcher and line-5", Duration::from_secs(120), || {
                pid = watcher_pid(&w);
                pid.is_some() && log_has(&w, "line-5")
            });
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid.unwrap()),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
        });
        run_and_check(&w)
    });
    assert!(
        !log.contains("reading the logs by polling"),
        "the job's own Live Tail session took over:\n{log}"
    );
    assert!(
        w.count("Logs.StartLiveTail") >= 2,
        "the watcher's session, then the job's own: {:?}",
        w.calls()
    );
}

/// Whether a training job's log stream of `w` has a line `text`.
fn log_has(w: &World, text: &str) -> bool {
    w.rt.block_on(
        w.logs
            .filter_log_events()
            .log_group_name("/aws/sagemaker/TrainingJobs")
            .send(),
    )
    .is_ok_and(|out| out.events().iter().any(|e| e.message() == Some(text)))
}
