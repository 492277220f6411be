//! Short, printable excerpts of values a job controls, for error lines.
//!
//! A refused value is quoted so the user can find it, but never whole: a variable or file can be
//! megabytes long, hold a secret, or carry terminal escape sequences into the job log.

/// Characters of a value quoted in an error by default.
pub const EXCERPT_CHARS: usize = 40;

/// `s` with control characters replaced by `?`, cut to `max` characters (marked with `…`).
pub fn plain(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// `s` in double quotes, shortened as by [`plain`] to [`EXCERPT_CHARS`].
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", plain(s, EXCERPT_CHARS).replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_short_and_printable() {
        assert_eq!(quoted("ml.m5.large"), "\"ml.m5.large\"");
        assert_eq!(plain("a\x1b[31mb\n", 10), "a?[31mb?");
        let long = "x".repeat(1000);
        let q = quoted(&long);
        assert_eq!(q.chars().count(), EXCERPT_CHARS + 3);
        assert!(q.ends_with("…\""));
        assert_eq!(quoted("say \"hi\""), "\"say \\\"hi\\\"\"");
    }
}
