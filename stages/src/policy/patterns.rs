//! Allow-lists written as shell-style globs (`ml.g5.*`, `arn:aws:iam::123456789012:role/ci-*`).

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// A list of glob patterns; a value is allowed when any pattern matches it whole.
#[derive(Clone, Default)]
pub struct Patterns {
    sources: Vec<String>,
    matchers: Vec<GlobMatcher>,
    /// The same patterns read as image references: the registry host (up to the first `/`)
    /// matched label by label, so `*` never spans a `.` there, and the path as usual.
    images: Vec<(GlobMatcher, Option<GlobMatcher>)>,
}

/// A host with its dots turned into the glob separator, so `*` matches within one label.
fn host_as_path(host: &str) -> String {
    host.replace('.', "/")
}

fn glob(p: &str) -> Result<GlobMatcher, globset::Error> {
    GlobBuilder::new(p)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
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
            // A bare `**` (or `host**`) spans the path too, as it does for plain values.
            let (host, path) = p.split_once('/').map_or_else(
                || (p, p.contains("**").then_some("**")),
                |(h, r)| (h, Some(r)),
            );
            let image = glob(&host_as_path(host))
                .and_then(|h| path.map(glob).transpose().map(|path| (h, path)));
            match (glob(p), image) {
                (Ok(g), Ok(image)) => {
                    out.sources.push(p.to_owned());
                    out.matchers.push(g);
                    out.images.push(image);
                }
                (Err(e), _) | (_, Err(e)) => {
                    bad.push(format!("{p:?} is not a valid pattern: {}", e.kind()));
                }
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

    /// Whether any pattern matches `image` (a normalized reference): the registry host label by
    /// label (a `*` never spans a `.`), then the repository path and tag.
    pub fn allows_image(&self, image: &str) -> bool {
        let (host, path) = image
            .split_once('/')
            .map_or((image, None), |(h, r)| (h, Some(r)));
        let host = host_as_path(host);
        self.images.iter().any(|(h, p)| {
            h.is_match(&host)
                && match (p, path) {
                    (Some(p), Some(path)) => p.is_match(path),
                    (None, None) => true,
                    _ => false,
                }
        })
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
    fn image_hosts_match_label_by_label() {
        let p = Patterns::compile(&[
            "*.dkr.ecr.*.amazonaws.com/**",
            "docker.io/library/python:*",
            "registry.example.com/team-*/**",
        ])
        .unwrap();
        assert!(p.allows_image("123456789012.dkr.ecr.us-east-1.amazonaws.com/ml/train:1"));
        assert!(p.allows_image("docker.io/library/python:3.12-slim"));
        assert!(!p.allows_image("docker.io/library/python/evil:1"));
        // `*` in a host covers one label, never a whole attacker-chosen domain.
        assert!(!p.allows_image("123456789012.dkr.ecr.us-east-1.evil.io.amazonaws.com/x:1"));
        assert!(!p.allows_image("registry.example.com.evil.io/team-a/x:1"));
        assert!(p.allows_image("registry.example.com/team-a/x:1"));
        assert!(!p.allows_image("registry.example.com/team-a"));
        let any = Patterns::compile(&["**"]).unwrap();
        assert!(any.allows_image("public.ecr.aws/docker/library/alpine:3.20"));
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
