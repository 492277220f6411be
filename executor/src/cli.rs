//! The command line: the protocol stages gitlab-runner calls and the admin subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// GitLab Runner custom executor that runs CI jobs as SageMaker and ECS work.
#[derive(Debug, Parser)]
#[command(name = "sagemaker-executor", version, about)]
pub struct Cli {
    /// The executor's config file (TOML).
    #[arg(
        long,
        env = "SAGEMAKER_EXECUTOR_CONFIG",
        default_value = "/etc/sagemaker-executor/config.toml"
    )]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Protocol stages and admin commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Protocol: print the job's builds dir and driver info as JSON.
    Config,
    /// Protocol: resolve the job's action and check it against the policy.
    Prepare,
    /// Protocol: run one stage script.
    Run {
        /// The stage script the runner wrote.
        script: PathBuf,
        /// The stage name (`get_sources`, `build_script`, `step_*`, …).
        stage: String,
    },
    /// Protocol: stop what the job left running and remove its files.
    Cleanup,
    /// Admin: check the config file and print every problem, or "ok".
    Validate,
    /// Admin: check the config against the AWS account it points at, read-only (credentials,
    /// region, staging bucket, roles, Fargate network, cluster, log group, helper image): one
    /// line per check with what to fix; exit 0 only when none fails.
    Doctor,
    /// Admin: print the JSON Schema of the job spec file (`SAGEMAKER_SPEC`).
    SpecSchema,
    /// Admin: stop and delete what finished or vanished jobs left behind (training jobs, Fargate
    /// tasks and staged workspaces tagged or keyed by this executor). Safe from cron on several
    /// runner hosts at once.
    Gc {
        /// Only print the table of what would be released.
        #[arg(long)]
        dry_run: bool,
        /// Keep what is younger than this (e.g. `24h`, `90m`).
        #[arg(long, default_value = "24h")]
        older_than: String,
    },
    /// Inside a Fargate task's helper containers: move the workspace between S3 and the task
    /// volume. Not for direct use; RunTask's container overrides supply the arguments.
    #[command(hide = true, subcommand)]
    Workspace(WorkspaceCommand),
    /// The runner host's shared watcher of log streams and state-change events, started by the
    /// first waiting job. Not for direct use.
    #[command(hide = true)]
    WatchHost,
}

/// What a helper container does.
#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Download the named objects under `s3://<bucket>/<prefix>` into `dest` (no listing).
    Fetch {
        /// Staging bucket.
        #[arg(long)]
        bucket: String,
        /// The run's staging prefix (ends with `/`).
        #[arg(long)]
        prefix: String,
        /// An object to download, a plain name under the prefix (repeatable, at least one): the
        /// task role may not list the prefix.
        #[arg(long = "object", required = true)]
        objects: Vec<String>,
        /// Directory to download into (created if missing).
        #[arg(long)]
        dest: PathBuf,
        /// The task volume's mount point, an ancestor of `dest`: it and every directory from it
        /// down to `dest` become writable by any user (mode 1777, as /tmp), so a job image whose
        /// USER is not root can restore and pack the workspace (the fetched files are readable
        /// by any user either way). Without it the directories keep their owner and modes.
        #[arg(long)]
        volume_root: Option<PathBuf>,
        /// AWS region (default: the container's environment).
        #[arg(long)]
        region: Option<String>,
        /// Path-style S3 addressing.
        #[arg(long)]
        path_style: bool,
    },
    /// Upload `source` to `s3://<bucket>/<key>`.
    Push {
        /// Staging bucket.
        #[arg(long)]
        bucket: String,
        /// Object key.
        #[arg(long)]
        key: String,
        /// The file to upload.
        #[arg(long)]
        source: PathBuf,
        /// AWS region (default: the container's environment).
        #[arg(long)]
        region: Option<String>,
        /// Path-style S3 addressing.
        #[arg(long)]
        path_style: bool,
        /// Encrypt the upload with this KMS key (SSE-KMS).
        #[arg(long)]
        kms_key_id: Option<String>,
    },
}
