//! `[policy.projects."<path pattern>"]`: which IAM roles the jobs of a project may use, and on
//! which refs and environments. Role patterns may name the project with `{project_path}`, so one
//! entry such as `"ml/*" = { roles = ["arn:aws:iam::123456789012:role/ci-{project_path}"] }`
//! gives every project its own role and no project another's.
//!
//! The lists gate every role a job can reach: the per-job credentials role, and the training
//! execution or task role a job names. Once any entry exists, a project that no entry matches
//! may use no role of its choosing (closed by default).

use super::{Patterns, Rejection};

/// The placeholder for the job's project path in role patterns.
pub const PROJECT_PATH: &str = "{project_path}";

/// What `{project_path}` stands for in a role: the path with `/` as `-`, since an IAM role name
/// holds no `/` (`ml/churn` -> `ml-churn`).
pub fn project_path_in_role(project_path: &str) -> String {
    project_path.replace('/', "-")
}

/// `template` with every `{project_path}` replaced for `project_path` (no glob escaping: for a
/// role ARN, not a pattern).
pub fn expand_role(template: &str, project_path: &str) -> String {
    template.replace(PROJECT_PATH, &project_path_in_role(project_path))
}

/// One validated `[policy.projects."<pattern>"]` entry.
#[derive(Debug, Clone)]
pub struct ProjectPolicy {
    /// The table key as written (`ml/*`).
    pub key: String,
    /// The key compiled.
    pub paths: Patterns,
    /// Role patterns as written, `{project_path}` still in them.
    pub roles: Vec<String>,
    /// Roles only on protected refs.
    pub require_protected_ref: bool,
    /// Environments (the token's `environment` claim) a job must deploy to; `None`: any or none.
    pub environments: Option<Patterns>,
}

impl ProjectPolicy {
    /// The role patterns for `project_path`, placeholders filled (escaped, so a path can never
    /// widen a pattern).
    pub fn roles_for(&self, project_path: &str) -> Patterns {
        let filled = globset::escape(&project_path_in_role(project_path));
        let expanded: Vec<String> = self
            .roles
            .iter()
            .map(|r| r.replace(PROJECT_PATH, &filled))
            .collect();
        // Compiled once at load with a sample path; a path's escaped text cannot break a glob.
        Patterns::compile(&expanded).unwrap_or_default()
    }

    /// Whether this entry allows `role` for `project_path`.
    pub fn allows_role(&self, project_path: &str, role: &str) -> bool {
        self.paths.allows(project_path) && self.roles_for(project_path).allows(role)
    }

    /// The config key, for messages: `policy.projects."ml/*"`.
    pub fn rule(&self) -> String {
        format!("policy.projects.{:?}", self.key)
    }
}

/// The entries that allow `role` for `project_path`, or the rejection saying why none does.
pub fn entries_allowing<'a>(
    projects: &'a [ProjectPolicy],
    project_path: &str,
    role: &str,
    setting: &str,
) -> Result<Vec<&'a ProjectPolicy>, Rejection> {
    let matching: Vec<&ProjectPolicy> = projects
        .iter()
        .filter(|p| p.paths.allows(project_path))
        .collect();
    if matching.is_empty() {
        return Err(Rejection::new(
            setting,
            format!(
                "project {} matches no policy.projects entry, so its jobs may use no role",
                crate::excerpt::quoted(project_path)
            ),
        ));
    }
    let allowing: Vec<&ProjectPolicy> = matching
        .iter()
        .copied()
        .filter(|p| p.roles_for(project_path).allows(role))
        .collect();
    if allowing.is_empty() {
        let rules: Vec<String> = matching
            .iter()
            .map(|p| format!("{}.roles {}", p.rule(), p.roles_for(project_path)))
            .collect();
        return Err(Rejection::new(
            setting,
            format!(
                "{} is not allowed for project {} by {}",
                crate::excerpt::quoted(role),
                crate::excerpt::quoted(project_path),
                rules.join(", ")
            ),
        ));
    }
    Ok(allowing)
}

/// Refuses a role a job names (an execution or task role) when project entries exist and none
/// allows it for the job's project.
pub fn check_named_role(
    out: &mut Vec<Rejection>,
    projects: &[ProjectPolicy],
    project_path: &str,
    role: &str,
    setting: &str,
) {
    if projects.is_empty() {
        return;
    }
    if let Err(r) = entries_allowing(projects, project_path, role, setting) {
        out.push(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, roles: &[&str]) -> ProjectPolicy {
        ProjectPolicy {
            key: key.to_owned(),
            paths: Patterns::compile(&[key]).expect("pattern"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            require_protected_ref: false,
            environments: None,
        }
    }

    const ML: &str = "arn:aws:iam::123456789012:role/ci-{project_path}";

    #[test]
    fn project_path_fills_the_role_and_gives_each_project_its_own() {
        let projects = [entry("ml/*", &[ML])];
        let own = "arn:aws:iam::123456789012:role/ci-ml-churn";
        assert!(entries_allowing(&projects, "ml/churn", own, "S").is_ok());
        let other = entries_allowing(&projects, "ml/fraud", own, "SAGEMAKER_AWS_ROLE_ARN")
            .expect_err("another project's role");
        assert!(other.to_string().contains("ci-ml-fraud"), "{other}");
        assert_eq!(expand_role(ML, "ml/churn"), own);
    }

    #[test]
    fn a_project_no_entry_matches_may_use_no_role() {
        let projects = [entry("ml/*", &["arn:aws:iam::123456789012:role/*"])];
        let r = entries_allowing(
            &projects,
            "web/site",
            "arn:aws:iam::123456789012:role/x",
            "SAGEMAKER_AWS_ROLE_ARN",
        )
        .expect_err("unmatched project");
        assert!(
            r.to_string().contains("matches no policy.projects entry"),
            "{r}"
        );
        // `*` does not cross `/`: a nested project is not under `ml/*`.
        assert!(
            entries_allowing(&projects, "ml/a/b", "arn:aws:iam::123456789012:role/x", "S").is_err()
        );
    }

    #[test]
    fn a_path_cannot_widen_a_pattern() {
        let projects = [entry("**", &[ML])];
        // A (hypothetical) project path with glob characters is matched literally.
        assert!(
            entries_allowing(
                &projects,
                "ml/*",
                "arn:aws:iam::123456789012:role/ci-ml-churn",
                "S"
            )
            .is_err()
        );
    }

    #[test]
    fn named_roles_are_checked_only_once_entries_exist() {
        let mut out = Vec::new();
        check_named_role(&mut out, &[], "ml/churn", "arn:aws:iam::1:role/x", "S");
        assert!(out.is_empty());
        check_named_role(
            &mut out,
            &[entry("ml/*", &[ML])],
            "ml/churn",
            "arn:aws:iam::123456789012:role/Admin",
            "SAGEMAKER_ROLE_ARN",
        );
        assert_eq!(out.len(), 1);
        assert!(out[0].to_string().starts_with("SAGEMAKER_ROLE_ARN: "));
    }
}
