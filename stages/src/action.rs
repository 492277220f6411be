//! The actions a job can become, and how their names are spelled in variables and config.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// What a CI job turns into on AWS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// A SageMaker training job runs the job's image and script.
    Train,
    /// An ECS Fargate task runs the job's image and script.
    Fargate,
    /// SageMaker Model Registry calls.
    Register,
    /// A SageMaker endpoint deployment.
    Deploy,
    /// An endpoint teardown.
    Undeploy,
    /// An ECS service moved to a new image.
    EcsDeploy,
}

impl Action {
    /// Every action, in the order the documentation lists them.
    pub const ALL: [Action; 6] = [
        Action::Train,
        Action::Fargate,
        Action::Register,
        Action::Deploy,
        Action::Undeploy,
        Action::EcsDeploy,
    ];

    /// The spelling used in `SAGEMAKER_ACTION` and the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Train => "train",
            Action::Fargate => "fargate",
            Action::Register => "register",
            Action::Deploy => "deploy",
            Action::Undeploy => "undeploy",
            Action::EcsDeploy => "ecs-deploy",
        }
    }

    /// Whether the job's `script:` runs remotely (train, fargate) rather than being replaced by API calls.
    pub fn runs_user_script(self) -> bool {
        matches!(self, Action::Train | Action::Fargate)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Action::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action {} (expected one of train, fargate, register, deploy, undeploy, ecs-deploy)",
    crate::excerpt::quoted(.0)
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s.trim())
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("Train".parse::<Action>().is_err());
        assert!("ecs_deploy".parse::<Action>().is_err());
    }
}
