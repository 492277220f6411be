//! The one error type of the test-support library. Harness code returns it instead of
//! panicking, so a broken fixture or a missing binary produces a message that says what to
//! fix; tests are free to `expect` on it.

use std::path::PathBuf;

/// Everything that can go wrong while setting up or driving a job, or the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing, e.g. "writing response.json".
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A job fixture is invalid (unknown key, wrong type, bad value).
    #[error("fixture {path}: {message}")]
    Fixture {
        /// The fixture file, or `<inline>` for fixtures built from a string.
        path: String,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The runner configuration cannot drive a job.
    #[error("runner config: {0}")]
    Config(String),
    /// A `git` command used to build a fixture repository failed.
    #[error("git {args}: {message}")]
    Git {
        /// The git arguments.
        args: String,
        /// stderr of git, or the spawn error.
        message: String,
    },
    /// A binary the tests need has not been built or installed.
    #[error("{what} not found at {}: {hint}", path.display())]
    Missing {
        /// What is missing, e.g. "sagemaker-executor binary".
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// A wait with a deadline ran out; the message says what was awaited and what was seen.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A waited-for line never came because the job finished first.
    #[error("job finished before {0}")]
    JobFinished(String),
    /// A regular expression given by a test is invalid.
    #[error("invalid pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// The regex error.
        message: String,
    },
    /// A `.gitlab-ci.yml` cannot be run: every problem (invalid or unsupported keyword,
    /// refused pipeline), one per line.
    #[error("pipeline {path}:\n{}", problems.join("\n"))]
    Pipeline {
        /// The pipeline file.
        path: String,
        /// One line per problem, naming the keyword and the job.
        problems: Vec<String>,
    },
    /// The simulator failed to start or its control API answered unexpectedly.
    #[error("simulator: {0}")]
    Sim(String),
    /// A JSON document could not be decoded or encoded.
    #[error("{context}: {source}")]
    Json {
        /// What was being decoded.
        context: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
