//! Turning a CloudWatch log stream name into the short source label shown in the job log.
//!
//! Stream names are set by the platform, not by us, so parsing is forgiving: a name that does not
//! have the expected shape still gets a label (its last path segment, or the whole name), never a
//! panic, and never an empty label for a non-empty name.

/// How the remote platform names its log streams, which decides each line's source label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamNaming {
    /// SageMaker training: `<job>/algo-<n>-<epoch-seconds>`; the source is `algo-<n>`.
    ///
    /// The epoch suffix changes when a host restarts (e.g. after a spot interruption), so two
    /// streams can share one source label: they are the same host.
    SageMakerTraining,
    /// ECS awslogs driver: `<prefix>/<container>/<task-id>`; the source is `<container>`.
    Ecs,
}

impl StreamNaming {
    /// The source label for a stream name.
    pub fn source_of(self, stream_name: &str) -> String {
        let label = match self {
            StreamNaming::SageMakerTraining => sagemaker_host(stream_name),
            StreamNaming::Ecs => ecs_container(stream_name),
        };
        if label.is_empty() {
            stream_name.to_owned()
        } else {
            label.to_owned()
        }
    }
}

/// `job/algo-1-1700000000` -> `algo-1`. The job name cannot contain `/`, so the host part is
/// everything after the last one; the epoch is a trailing `-` segment of at least nine digits
/// (epoch seconds), which keeps a host number like the `1` in `algo-1` from being taken for it.
fn sagemaker_host(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once('-') {
        Some((host, epoch))
            if !host.is_empty()
                && epoch.len() >= 9
                && epoch.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => last,
    }
}

/// `prefix/container/task-id` -> `container`. The task id and the container name cannot contain
/// `/`, but the prefix is the user's, so count from the end.
fn ecs_container(name: &str) -> &str {
    let mut parts = name.rsplit('/');
    let last = parts.next().unwrap_or(name);
    parts.next().unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sagemaker_stream_names_give_the_host() {
        let n = StreamNaming::SageMakerTraining;
        assert_eq!(n.source_of("my-job/algo-1-1700000000"), "algo-1");
        assert_eq!(n.source_of("my-job/algo-12-1700000001"), "algo-12");
        // Unexpected shapes still give a readable, non-empty label.
        assert_eq!(n.source_of("my-job/algo-1"), "algo-1");
        assert_eq!(n.source_of("my-job/custom"), "custom");
        assert_eq!(n.source_of("my-job/"), "my-job/");
        assert_eq!(n.source_of(""), "");
    }

    #[test]
    fn ecs_stream_names_give_the_container() {
        let n = StreamNaming::Ecs;
        assert_eq!(n.source_of("gl-123/job/0123456789abcdef"), "job");
        assert_eq!(n.source_of("a/b/fetch/0123"), "fetch");
        assert_eq!(n.source_of("lonely"), "lonely");
    }
}
