//! The job as the core sees it: identity, git context, image and variables, independent of how a
//! front end learned them (the custom executor reads them from `JOB_RESPONSE_FILE`).

use std::collections::BTreeMap;
use std::time::Duration;

/// One CI variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The value (for file variables, the file's content).
    pub value: String,
    /// Masked in the job log: never print it.
    pub masked: bool,
    /// A file-type variable.
    pub file: bool,
}

/// The job's variables by key.
#[derive(Debug, Clone, Default)]
pub struct Variables(BTreeMap<String, Variable>);

impl Variables {
    /// Builds the map; a later duplicate key wins, as in GitLab.
    pub fn new(vars: impl IntoIterator<Item = (String, Variable)>) -> Self {
        Variables(vars.into_iter().collect())
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.value.as_str())
    }

    /// Every `(key, value)` whose key starts with `prefix`, with the prefix removed.
    pub fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0
            .range(prefix.to_owned()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.value.as_str()))
    }

    /// Values that must never be printed: masked variables (and their file contents).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.0
            .values()
            .filter(|v| v.masked && v.value.len() >= 8)
            .map(|v| v.value.as_str())
    }
}

/// A CI job.
#[derive(Debug, Clone)]
pub struct Job {
    /// GitLab job id.
    pub id: u64,
    /// Job name from `.gitlab-ci.yml`.
    pub name: String,
    /// Project id.
    pub project_id: u64,
    /// `group/project` path.
    pub project_path: String,
    /// Pipeline id.
    pub pipeline_id: u64,
    /// Web URL of the job.
    pub url: String,
    /// Branch or tag name.
    pub git_ref: String,
    /// Commit SHA.
    pub sha: String,
    /// Whether the ref is protected.
    pub ref_protected: bool,
    /// The project's default branch, when known.
    pub default_branch: Option<String>,
    /// The job's `image:`.
    pub image: Option<String>,
    /// Job timeout.
    pub timeout: Duration,
    /// Every variable.
    pub variables: Variables,
}

impl Job {
    /// Tags every resource created for this job carries, so `gc` and cleanup can find
    /// them and cost reports can attribute them.
    pub fn resource_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![
            ("gitlab:project-id".to_owned(), self.project_id.to_string()),
            ("gitlab:project-path".to_owned(), self.project_path.clone()),
            (
                "gitlab:pipeline-id".to_owned(),
                self.pipeline_id.to_string(),
            ),
            ("gitlab:job-id".to_owned(), self.id.to_string()),
            ("gitlab:job-url".to_owned(), self.url.clone()),
            ("gitlab:ref".to_owned(), self.git_ref.clone()),
            ("gitlab:commit".to_owned(), self.sha.clone()),
            ("managed-by".to_owned(), crate::MANAGED_BY.to_owned()),
        ];
        // AWS tag values allow at most 256 characters and a restricted character set.
        for (_, v) in &mut tags {
            *v = tag_value(v);
        }
        tags
    }
}

/// A value made safe for AWS tags: allowed characters only, at most 256 of them.
pub fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(v: &str) -> Variable {
        Variable {
            value: v.into(),
            masked: false,
            file: false,
        }
    }

    #[test]
    fn prefix_lookup_strips_the_prefix() {
        let vars = Variables::new([
            ("SAGEMAKER_INPUT_TRAIN".into(), var("s3://a")),
            ("SAGEMAKER_INPUT_TEST".into(), var("s3://b")),
            ("SAGEMAKER_INSTANCE_TYPE".into(), var("ml.m5.large")),
        ]);
        let got: Vec<_> = vars.with_prefix("SAGEMAKER_INPUT_").collect();
        assert_eq!(got, vec![("TEST", "s3://b"), ("TRAIN", "s3://a")]);
    }

    #[test]
    fn tag_values_are_sanitised() {
        assert_eq!(tag_value("feature/x#1"), "feature/x_1");
        assert_eq!(tag_value(&"a".repeat(300)).len(), 256);
    }
}
