//! CloudWatch Logs tailing for remote jobs: SageMaker training hosts and ECS task containers.
//!
//! The wait loops call [`LogTailer::poll`] between status polls and print what it returns
//! with [`format_line`]; when the job has ended they call [`LogTailer::drain`]. The tailer keeps
//! one forward token per stream, discovers SageMaker streams by prefix (following `nextToken`
//! past 50 streams, which the SageMaker SDK's loop does not), or tails ECS awslogs streams by
//! name, and merges lines from several hosts by timestamp. A failed call moves no cursor, and
//! lines already read are kept until they can be handed out, so throttling neither loses nor
//! repeats a line; a group or stream that does not exist yet just means "no logs yet". Memory is
//! bounded by a read budget per poll, and [`LogTailer::drain_with`] streams the final drain.
//!
//! # Polling cost against latency
//!
//! With polling, a line becomes visible after CloudWatch's ingestion lag (about a second) plus
//! the wait for the next poll, uniform over the poll interval `T`, so p95 latency is roughly
//! `lag + 0.95 T`, while cost is at least one `GetLogEvents` per stream per poll (two when the
//! stream is active and is read to its end, one with [`PageFollow::WhileBacklogged`]). Design
//! targets (BENCHMARKS.md) ask for at most 6 AWS calls per minute per job at steady state *and*
//! p95 latency of 5 s.
//! The latency target needs `T` of about 4 s, i.e. at least 15 log calls per minute for a single
//! host before any status poll; the call budget allows `T` of 10 s or more (less with several
//! hosts or with `DescribeTrainingJob` in the same budget), i.e. about 10 s of latency. No
//! polling cadence meets both; an adaptive one (fast while lines flow, slow when idle) meets the
//! call budget only while the job is quiet, and `FilterLogEvents` over all hosts would remove
//! the per-host factor but not the interval one. CloudWatch `StartLiveTail`, an event-stream API
//! in `aws-sdk-cloudwatchlogs` (`Client::start_live_tail`), meets both: one call opens a session
//! of up to three hours that pushes new events every second. It has no history (the head of a
//! stream and the final drain would still come from `GetLogEvents`), samples above 500 events
//! per second, drops updates for a slow reader, and is billed per session-minute with a
//! per-account limit on concurrent sessions. [`live`] implements it (`[watch] live_tail`),
//! with GetLogEvents for the head of each stream, every gap and the final drain.

mod error;
pub mod feed;
mod line;
pub mod live;
mod naming;
mod tailer;

#[cfg(test)]
mod tests;

pub use error::{LogError, LogErrorKind};
pub use line::{LogLine, format_line};
pub use naming::StreamNaming;
pub use tailer::{LogTailer, PageFollow};
