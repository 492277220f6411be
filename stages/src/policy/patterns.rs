//! Allow-lists written as shell-style globs (`ml.g5.*`, `arn:aws:iam::123456789012:role/ci-*`).

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// A list of glob patterns; a value is allowed when any pattern matches it whole.
#[derive(Clone, Default)]
pub struct Patterns {
    sources: Vec<String>,
    matchers: Vec<GlobMatcher>,
}

impl Patterns {
    /// Compiles `patterns`; returns each pattern that is not a valid glob with the reason.
    pub fn compile<S: AsRef<str>>(patterns: &[S]) -> Result<Self, Vec<String>> {
        let mut out = Patterns::default();
        let mut bad = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            if p.trim().is_empty() {
                bad.push("an empty pattern matches nothing; remove it".to_owned());
                continue;
            }
            // `literal_separator` keeps `*` from crossing `/`, so `registry/team-*` cannot match
            // `registry/team-a/../other`; admins write `**` when they mean any depth.
            match GlobBuilder::new(p).literal_separator(true).build() {
                Ok(g) => {
                    out.sources.push(p.to_owned());
                    out.matchers.push(g.compile_matcher());
                }
                Err(e) => bad.push(format!("{p:?} is not a valid pattern: {}", e.kind())),
            }
        }
        if bad.is_empty() { Ok(out) } else { Err(bad) }
    }

    /// Patterns that allow exactly the given literal values.
    pub fn literals<S: AsRef<str>>(values: &[S]) -> Self {
        let escaped: Vec<String> = values.iter().map(|v| globset::escape(v.as_ref())).collect();
        Patterns::compile(&escaped).unwrap_or_default()
    }

    /// Whether any pattern matches `value`.
    pub fn allows(&self, value: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(value))
    }

    /// Whether the list is empty (allows nothing).
    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.sources).finish()
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}]", self.sources.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_values_and_not_across_slashes() {
        let p = Patterns::compile(&["ml.g5.*", "123.dkr.ecr.*.amazonaws.com/team-*"]).unwrap();
        assert!(p.allows("ml.g5.xlarge"));
        assert!(!p.allows("ml.p5.48xlarge"));
        assert!(!p.allows("xml.g5.xlarge"));
        assert!(p.allows("123.dkr.ecr.us-east-1.amazonaws.com/team-a"));
        assert!(!p.allows("123.dkr.ecr.us-east-1.amazonaws.com/team-a/../x"));
    }

    #[test]
    fn bad_patterns_are_reported() {
        let err = Patterns::compile(&["ok", "a[", ""]).unwrap_err();
        assert_eq!(err.len(), 2, "{err:?}");
    }

    #[test]
    fn literals_do_not_expand() {
        let p = Patterns::literals(&["a*b"]);
        assert!(p.allows("a*b"));
        assert!(!p.allows("axxb"));
    }
}
