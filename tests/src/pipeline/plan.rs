//! Which jobs a pipeline gets for one source and ref, as GitLab decides when it creates the
//! pipeline: the predefined variables of that pipeline, `workflow:rules`, each job's `rules`
//! (first match wins; none matching or `when: never` leaves the job out) or job-level `when`,
//! the resulting `allow_failure`, checks that every need is in the pipeline, and an execution
//! order that respects stages and `needs`.

use super::expand::{Var, expand_nested};
use super::parse::{AllowFailure, Job, Pipeline, Rule, When};
use crate::runner::Project;

/// `CI_PIPELINE_SOURCE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineSource {
    /// A push to a branch.
    Push,
    /// A merge request pipeline.
    MergeRequestEvent,
}

impl PipelineSource {
    /// GitLab's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineSource::Push => "push",
            PipelineSource::MergeRequestEvent => "merge_request_event",
        }
    }

    /// From GitLab's spelling.
    pub fn parse(text: &str) -> Result<PipelineSource, String> {
        match text {
            "push" => Ok(PipelineSource::Push),
            "merge_request_event" => Ok(PipelineSource::MergeRequestEvent),
            other => Err(format!(
                "pipeline source {other:?}: expected push or merge_request_event"
            )),
        }
    }
}

/// The merge request of a merge request pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRequest {
    /// `CI_MERGE_REQUEST_IID`.
    pub iid: u64,
    /// `CI_MERGE_REQUEST_TARGET_BRANCH_NAME`.
    pub target_branch: String,
}

/// What GitLab knows when it creates the pipeline.
#[derive(Debug, Clone)]
pub struct Context {
    /// `CI_PIPELINE_SOURCE`.
    pub source: PipelineSource,
    /// The branch the commit is on (`CI_COMMIT_REF_NAME`; the source branch of a merge
    /// request).
    pub branch: String,
    /// `CI_DEFAULT_BRANCH`.
    pub default_branch: String,
    /// Set for merge request pipelines.
    pub merge_request: Option<MergeRequest>,
    /// The project.
    pub project: Project,
    /// `CI_COMMIT_SHA`.
    pub sha: String,
    /// `CI_PIPELINE_ID`.
    pub pipeline_id: u64,
    /// `CI_SERVER_URL`.
    pub server_url: String,
}

impl Context {
    /// Whether the ref is protected: only the default branch is, as in a new GitLab project;
    /// a merge request pipeline runs on the source branch's unprotected ref.
    pub fn protected(&self) -> bool {
        self.merge_request.is_none() && self.branch == self.default_branch
    }

    /// The variables GitLab adds for merge request pipelines only.
    pub fn merge_request_variables(&self) -> Vec<(String, String)> {
        let Some(mr) = &self.merge_request else {
            return Vec::new();
        };
        let project_url = format!("{}/{}", self.server_url, self.project.path);
        [
            ("CI_MERGE_REQUEST_IID", mr.iid.to_string()),
            ("CI_MERGE_REQUEST_ID", (1000 + mr.iid).to_string()),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME", self.branch.clone()),
            (
                "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
                mr.target_branch.clone(),
            ),
            ("CI_MERGE_REQUEST_PROJECT_PATH", self.project.path.clone()),
            ("CI_MERGE_REQUEST_PROJECT_URL", project_url.clone()),
            (
                "CI_MERGE_REQUEST_REF_PATH",
                format!("refs/merge-requests/{}/head", mr.iid),
            ),
            ("CI_MERGE_REQUEST_EVENT_TYPE", "detached".to_owned()),
            (
                "CI_OPEN_MERGE_REQUESTS",
                format!("{}!{}", self.project.path, mr.iid),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The predefined variables a pipeline's rules and variables can use, with the values
    /// the emulated runner's payload gives them.
    pub fn predefined(&self) -> Vec<Var> {
        let project_name = self
            .project
            .path
            .rsplit('/')
            .next()
            .unwrap_or(&self.project.path);
        let namespace = self.project.path.rsplit_once('/').map_or("", |(ns, _)| ns);
        let mut vars = vec![
            Var::raw("CI", "true"),
            Var::raw("GITLAB_CI", "true"),
            Var::raw("CI_SERVER_URL", self.server_url.clone()),
            Var::raw("CI_PIPELINE_SOURCE", self.source.as_str()),
            Var::raw("CI_PIPELINE_ID", self.pipeline_id.to_string()),
            Var::raw("CI_PROJECT_ID", self.project.id.to_string()),
            Var::raw("CI_PROJECT_PATH", self.project.path.clone()),
            Var::raw("CI_PROJECT_NAME", project_name),
            Var::raw("CI_PROJECT_NAMESPACE", namespace),
            Var::raw(
                "CI_PROJECT_URL",
                format!("{}/{}", self.server_url, self.project.path),
            ),
            Var::raw("CI_COMMIT_SHA", self.sha.clone()),
            Var::raw(
                "CI_COMMIT_SHORT_SHA",
                self.sha.chars().take(8).collect::<String>(),
            ),
            Var::raw("CI_COMMIT_REF_NAME", self.branch.clone()),
            Var::raw("CI_COMMIT_REF_SLUG", crate::runner::ref_slug(&self.branch)),
            Var::raw("CI_COMMIT_REF_PROTECTED", self.protected().to_string()),
            Var::raw("CI_DEFAULT_BRANCH", self.default_branch.clone()),
        ];
        // GitLab sets CI_COMMIT_BRANCH in branch pipelines only, not for merge requests.
        if self.merge_request.is_none() {
            vars.push(Var::raw("CI_COMMIT_BRANCH", self.branch.clone()));
        }
        vars.extend(
            self.merge_request_variables()
                .into_iter()
                .map(|(k, v)| Var::raw(k, v)),
        );
        vars
    }
}

/// A job GitLab put into the pipeline.
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The job as parsed.
    pub job: Job,
    /// When it runs (from its matching rule, or its own `when`).
    pub when: When,
    /// Its `allow_failure`, rules and GitLab's defaults applied.
    pub allow_failure: AllowFailure,
    /// `variables:` of the matching rule.
    pub rule_variables: Vec<Var>,
}

/// The pipeline GitLab would create.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `Some(reason)` when `workflow:rules` create no pipeline.
    pub not_created: Option<String>,
    /// The jobs in an order that respects stages and needs.
    pub jobs: Vec<PlannedJob>,
    /// Jobs left out, with why.
    pub excluded: Vec<(String, String)>,
}

impl Plan {
    /// The planned job named `name`.
    pub fn job(&self, name: &str) -> Option<&PlannedJob> {
        self.jobs.iter().find(|j| j.job.name == name)
    }
}

/// The first matching rule, or `None` when no rule matches.
fn first_match<'a>(rules: &'a [Rule], lookup: &dyn Fn(&str) -> Option<String>) -> Option<&'a Rule> {
    rules.iter().find(|rule| {
        rule.condition
            .as_ref()
            .is_none_or(|(_, expr)| expr.eval(lookup))
    })
}

/// A lookup over variables (the last definition of a name wins).
fn lookup_in(vars: &[Var]) -> impl Fn(&str) -> Option<String> + '_ {
    move |name| {
        vars.iter()
            .rev()
            .find(|v| v.key == name)
            .map(|v| v.value.clone())
    }
}

/// The variables a job's rules see: predefined, global and job variables, expanded.
pub fn rule_variables(pipeline: &Pipeline, ctx: &Context, job: &Job) -> Result<Vec<Var>, String> {
    let mut vars = ctx.predefined();
    vars.push(Var::raw("CI_JOB_NAME", job.name.clone()));
    vars.push(Var::raw("CI_JOB_STAGE", job.stage.clone()));
    vars.extend(pipeline.variables.iter().cloned());
    vars.extend(job.variables.iter().cloned());
    expand_nested(&vars)
}

/// Decides the pipeline for `ctx`; `Err` lists every reason GitLab would refuse to create it.
pub fn plan(pipeline: &Pipeline, ctx: &Context) -> Result<Plan, Vec<String>> {
    let mut problems = Vec::new();
    if let Some(rules) = &pipeline.workflow_rules {
        let mut vars = ctx.predefined();
        vars.extend(pipeline.variables.iter().cloned());
        let vars = expand_nested(&vars).map_err(|e| vec![format!("variables: {e}")])?;
        let matched = first_match(rules, &lookup_in(&vars));
        if matched.is_none_or(|r| r.when == Some(When::Never)) {
            return Ok(Plan {
                not_created: Some("workflow:rules: no rule creates a pipeline here".to_owned()),
                jobs: Vec::new(),
                excluded: Vec::new(),
            });
        }
    }
    let mut jobs = Vec::new();
    let mut excluded = Vec::new();
    for job in &pipeline.jobs {
        let vars = match rule_variables(pipeline, ctx, job) {
            Ok(vars) => vars,
            Err(e) => {
                problems.push(format!("job `{}`: variables: {e}", job.name));
                continue;
            }
        };
        let (when, rule_allow, rule_variables) = match &job.rules {
            None => (job.when, None, Vec::new()),
            Some(rules) => match first_match(rules, &lookup_in(&vars)) {
                None => {
                    excluded.push((job.name.clone(), "no rule matched".to_owned()));
                    continue;
                }
                Some(rule) => (
                    rule.when.unwrap_or(When::OnSuccess),
                    rule.allow_failure,
                    rule.variables.clone(),
                ),
            },
        };
        if when == When::Never {
            let why = match &job.rules {
                Some(_) => "its matching rule says when: never",
                None => "when: never",
            };
            excluded.push((job.name.clone(), why.to_owned()));
            continue;
        }
        // A job-level `when: manual` may fail by default; a manual rule blocks (GitLab's
        // defaults differ on purpose).
        let default_allow = job.rules.is_none() && when == When::Manual;
        let allow_failure = match rule_allow {
            Some(any) => AllowFailure {
                any,
                exit_codes: Vec::new(),
            },
            None => job.allow_failure.clone().unwrap_or(AllowFailure {
                any: default_allow,
                exit_codes: Vec::new(),
            }),
        };
        jobs.push(PlannedJob {
            job: job.clone(),
            when,
            allow_failure,
            rule_variables,
        });
    }
    let present = |name: &str| jobs.iter().any(|j: &PlannedJob| j.job.name == name);
    for planned in &jobs {
        let job = &planned.job;
        for need in job.needs.iter().flatten() {
            let Some(needed) = pipeline.job(&need.job) else {
                continue;
            };
            if !present(&need.job) && !need.optional {
                problems.push(format!(
                    "job `{}` needs `{}`, which is not in this pipeline (rules left it out)",
                    job.name, need.job
                ));
            } else if pipeline.stage_index(&needed.stage) > pipeline.stage_index(&job.stage) {
                problems.push(format!(
                    "job `{}` needs `{}`, which is in a later stage",
                    job.name, need.job
                ));
            }
        }
        for dep in job.dependencies.iter().flatten() {
            let later = pipeline.job(dep).is_some_and(|d| {
                pipeline.stage_index(&d.stage) >= pipeline.stage_index(&job.stage)
            });
            if !present(dep) || later {
                problems.push(format!(
                    "job `{}` dependencies: `{dep}` is not in a prior stage of this pipeline",
                    job.name
                ));
            }
            if let Some(needs) = &job.needs
                && !needs.iter().any(|n| &n.job == dep)
            {
                problems.push(format!(
                    "job `{}` dependencies: `{dep}` must also be in needs",
                    job.name
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let jobs = order(pipeline, jobs).map_err(|e| vec![e])?;
    Ok(Plan {
        not_created: None,
        jobs,
        excluded,
    })
}

/// Stage by stage; inside a stage, a job after the same-stage jobs it needs (file order
/// otherwise).
fn order(pipeline: &Pipeline, jobs: Vec<PlannedJob>) -> Result<Vec<PlannedJob>, String> {
    let mut pending = jobs;
    pending.sort_by_key(|j| pipeline.stage_index(&j.job.stage));
    let mut out: Vec<PlannedJob> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let stage = pipeline.stage_index(&pending[0].job.stage);
        let ready = pending.iter().position(|j| {
            pipeline.stage_index(&j.job.stage) == stage
                && j.job.needs.iter().flatten().all(|n| {
                    out.iter().any(|done| done.job.name == n.job)
                        || !pending.iter().any(|p| p.job.name == n.job)
                })
        });
        match ready {
            Some(index) => out.push(pending.remove(index)),
            None => {
                return Err(format!(
                    "needs form a cycle among: {}",
                    pending
                        .iter()
                        .filter(|j| pipeline.stage_index(&j.job.stage) == stage)
                        .map(|j| j.job.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    const PIPELINE: &str = r#"
stages: [test, deploy]
variables:
  TARGET: prod
test:
  stage: test
  script: [x]
deploy-candidate:
  stage: deploy
  needs: [test]
  rules: [{if: $CI_PIPELINE_SOURCE == "merge_request_event"}]
  script: [x]
stop-candidate:
  stage: deploy
  needs: [deploy-candidate]
  rules: [{if: $CI_MERGE_REQUEST_IID, when: manual}]
  script: [x]
deploy-stable:
  stage: deploy
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH && $TARGET == "prod"
      variables: {TIER: production}
    - if: $CI_COMMIT_BRANCH =~ /^release\//
      when: manual
  script: [x]
cleanup:
  stage: deploy
  when: manual
  script: [x]
"#;

    fn ctx(source: PipelineSource, branch: &str) -> Context {
        Context {
            source,
            branch: branch.to_owned(),
            default_branch: "main".to_owned(),
            merge_request: (source == PipelineSource::MergeRequestEvent).then(|| MergeRequest {
                iid: 17,
                target_branch: "main".to_owned(),
            }),
            project: Project::default(),
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            pipeline_id: 5,
            server_url: "https://gitlab.example.com".to_owned(),
        }
    }

    fn names(plan: &Plan) -> Vec<(&str, When)> {
        plan.jobs
            .iter()
            .map(|j| (j.job.name.as_str(), j.when))
            .collect()
    }

    #[test]
    fn default_branch_push_gets_the_stable_deploy() {
        let p = parse(PIPELINE).unwrap();
        let plan = plan(&p, &ctx(PipelineSource::Push, "main")).unwrap();
        assert_eq!(
            names(&plan),
            [
                ("test", When::OnSuccess),
                ("deploy-stable", When::OnSuccess),
                ("cleanup", When::Manual)
            ]
        );
        let stable = plan.job("deploy-stable").unwrap();
        assert_eq!(stable.rule_variables[0].value, "production");
        // A job-level manual job may fail; excluded jobs say why.
        assert!(plan.job("cleanup").unwrap().allow_failure.any);
        assert!(
            plan.excluded
                .contains(&("deploy-candidate".to_owned(), "no rule matched".to_owned()))
        );
    }

    #[test]
    fn merge_request_pipeline_gets_the_candidate_and_its_blocking_manual_stop() {
        let p = parse(PIPELINE).unwrap();
        let c = ctx(PipelineSource::MergeRequestEvent, "feature/x");
        assert!(!c.predefined().iter().any(|v| v.key == "CI_COMMIT_BRANCH"));
        assert!(!c.protected());
        let plan = plan(&p, &c).unwrap();
        assert_eq!(
            names(&plan),
            [
                ("test", When::OnSuccess),
                ("deploy-candidate", When::OnSuccess),
                ("stop-candidate", When::Manual),
                ("cleanup", When::Manual),
            ]
        );
        assert!(!plan.job("stop-candidate").unwrap().allow_failure.any);
    }

    #[test]
    fn a_release_branch_gets_a_manual_stable_deploy() {
        let p = parse(PIPELINE).unwrap();
        let plan = plan(&p, &ctx(PipelineSource::Push, "release/2")).unwrap();
        assert_eq!(plan.job("deploy-stable").unwrap().when, When::Manual);
    }

    #[test]
    fn a_need_left_out_by_rules_refuses_the_pipeline() {
        let p = parse(
            "a:\n  rules: [{if: $NOPE}]\n  script: [x]\nb:\n  needs: [a]\n  script: [x]\nc:\n  needs: [{job: a, optional: true}]\n  script: [x]\n",
        )
        .unwrap();
        let errors = plan(&p, &ctx(PipelineSource::Push, "main")).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("job `b` needs `a`"), "{errors:?}");
    }

    #[test]
    fn workflow_rules_can_refuse_a_pipeline() {
        let p = parse(
            "workflow:\n  rules:\n    - if: $CI_PIPELINE_SOURCE == 'merge_request_event'\n    - if: $CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS\n      when: never\n    - if: $CI_COMMIT_BRANCH\nt:\n  script: [x]\n",
        )
        .unwrap();
        assert!(
            plan(&p, &ctx(PipelineSource::Push, "main"))
                .unwrap()
                .not_created
                .is_none()
        );
        assert!(
            plan(&p, &ctx(PipelineSource::MergeRequestEvent, "f"))
                .unwrap()
                .not_created
                .is_none()
        );
    }

    #[test]
    fn same_stage_needs_run_first() {
        let p = parse("stages: [s]\nb:\n  stage: s\n  needs: [a]\n  script: [x]\na:\n  stage: s\n  script: [x]\n").unwrap();
        let plan = plan(&p, &ctx(PipelineSource::Push, "main")).unwrap();
        let order: Vec<&str> = plan.jobs.iter().map(|j| j.job.name.as_str()).collect();
        assert_eq!(order, ["a", "b"]);
    }
}
