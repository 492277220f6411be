//! `watch-host` (hidden): the runner host's shared watcher, which the first waiting job starts
//! and which exits once no job has used it for `[watch] host_watcher_idle`. It says
//! [`stages::watch::host::READY`] on stdout once jobs may connect, and nothing on stdout after
//! that (the job that started it stops reading); its own messages go to stderr, the watcher log.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use stages::aws::Aws;
use stages::aws::credentials::JobCredentials;
use stages::watch::events::SqsQueue;
use stages::watch::host::{self, AwsSources, HostError};
use tokio_util::sync::CancellationToken;

pub async fn run(config: &Path, cancel: &CancellationToken) -> ExitCode {
    let cfg = match stages::config::load_file(config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("watch-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = &cfg.paths.state_root;
    let bound = match host::bind(root) {
        Ok(bound) => bound,
        // Another one serves this host: the job may connect to it.
        Err(HostError::AlreadyRunning) => return ready(),
        Err(e) => {
            eprintln!("watch-host: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The host's own credentials: the watcher reads logs and the queue for every job of the
    // host, whichever role a job works as.
    let aws = Aws::connect(&cfg, &JobCredentials::Runner).await;
    let sources = AwsSources {
        logs: aws.logs.clone(),
        queue: cfg
            .watch
            .queue_url
            .clone()
            .map(|url| SqsQueue::new(aws.sqs.clone(), url)),
    };
    let code = ready();
    eprintln!(
        "watch-host {}: serving {}",
        std::process::id(),
        host::socket_path(root).display()
    );
    host::serve(
        bound,
        sources,
        root,
        cfg.watch.safety_interval,
        cfg.watch.host_watcher_idle,
        cancel,
    )
    .await;
    eprintln!("watch-host {}: stopped", std::process::id());
    code
}

fn ready() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", host::READY).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
