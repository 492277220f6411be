//! One log line as handed to the job log, and its plain-text rendering.
//!
//! Rendering is colour-free on purpose: the job log owns the GitLab colours and section markers, and
//! keeping them out of here means this text can also go to files or tests unchanged.

/// One CloudWatch log event, labelled with the host or container it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When the event happened (CloudWatch `timestamp`), in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// `algo-1` for SageMaker training, the container name for ECS.
    pub source: String,
    /// The event text as CloudWatch returned it.
    pub message: String,
}

/// Renders a line for the job log: `[algo-1] message`, or just `message` without a source.
///
/// Trailing line breaks (`\n`, `\r\n`, a lone `\r`) are removed, so the caller adds exactly one.
/// A message holding several lines (a stack trace gathered by a multi-line pattern) gets the
/// prefix on each of them, so every host's output stays attributable.
pub fn format_line(line: &LogLine, with_source: bool) -> String {
    let message = line.message.trim_end_matches(['\n', '\r']);
    if !with_source {
        // A `\r` before an inner `\n` would make a terminal overwrite the line; drop it too.
        return message
            .split('\n')
            .map(|part| part.strip_suffix('\r').unwrap_or(part))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let mut out = String::with_capacity(message.len() + line.source.len() + 3);
    for (i, part) in message.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push('[');
        out.push_str(&line.source);
        out.push_str("] ");
        out.push_str(part.strip_suffix('\r').unwrap_or(part));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(message: &str) -> LogLine {
        LogLine {
            timestamp_ms: 0,
            source: "algo-1".to_owned(),
            message: message.to_owned(),
        }
    }

    #[test]
    fn prefixes_and_strips_line_endings() {
        assert_eq!(format_line(&line("hello"), true), "[algo-1] hello");
        assert_eq!(format_line(&line("hello\r"), true), "[algo-1] hello");
        assert_eq!(format_line(&line("hello\r\n"), true), "[algo-1] hello");
        assert_eq!(format_line(&line("hello\r"), false), "hello");
        assert_eq!(format_line(&line(""), true), "[algo-1] ");
        assert_eq!(format_line(&line(""), false), "");
    }

    #[test]
    fn every_inner_line_gets_the_prefix() {
        assert_eq!(
            format_line(&line("Traceback:\r\n  File x\n"), true),
            "[algo-1] Traceback:\n[algo-1]   File x"
        );
        assert_eq!(
            format_line(&line("a\r\nb"), false),
            "a\nb",
            "no stray carriage return inside"
        );
    }
}
