//! Which credentials `gc` releases a resource with: the role whose job session created it (its
//! `sagemaker-executor:role` tag), assumed from the runner's credentials, as cleanup uses the
//! job's own; the runner's credentials for resources without the tag, or when the runner may not
//! assume that role (the row then says so). One session per role per sweep.

use std::collections::BTreeMap;

use aws_config::SdkConfig;

use crate::aws::Aws;
use crate::aws::credentials::ROLE_TAG;
use crate::config::ExecutorConfig;

/// The runner's clients, and one set per role assumed so far.
pub(super) struct Sessions {
    sdk: SdkConfig,
    path_style: bool,
    region: String,
    runner: Aws,
    roles: BTreeMap<String, Result<Aws, String>>,
}

impl Sessions {
    /// The runner's credentials, as every other command of the executor uses them.
    pub(super) async fn new(cfg: &ExecutorConfig) -> Sessions {
        let sdk = crate::aws::sdk_config(cfg).await;
        let runner = Aws::from_sdk(&sdk, cfg.aws.s3_force_path_style, &cfg.region);
        Sessions {
            sdk,
            path_style: cfg.aws.s3_force_path_style,
            region: cfg.region.clone(),
            runner,
            roles: BTreeMap::new(),
        }
    }

    /// The runner's clients (listing, and resources no job role created).
    pub(super) fn runner(&self) -> &Aws {
        &self.runner
    }

    /// The clients to release a resource with these tags, and a note when they are the
    /// runner's although a job role created it.
    pub(super) async fn for_tags(
        &mut self,
        tags: &BTreeMap<String, String>,
    ) -> (&Aws, Option<String>) {
        let Some(role) = tags.get(ROLE_TAG).cloned() else {
            return (&self.runner, None);
        };
        if !self.roles.contains_key(&role) {
            let assumed = self.assume(&role).await;
            self.roles.insert(role.clone(), assumed);
        }
        match self.roles.get(&role) {
            Some(Ok(aws)) => (aws, None),
            Some(Err(why)) => (
                &self.runner,
                Some(format!("as the runner: cannot assume {role}: {why}")),
            ),
            None => (&self.runner, None),
        }
    }

    async fn assume(&self, role: &str) -> Result<Aws, String> {
        let out = aws_sdk_sts::Client::new(&self.sdk)
            .assume_role()
            .role_arn(role)
            .role_session_name("sagemaker-executor-gc")
            .send()
            .await
            .map_err(|e| crate::aws::errors::describe(&e))?;
        let creds = crate::aws::credentials::to_credentials(out.credentials(), "gc-role-session")
            .ok_or_else(|| "STS returned no credentials".to_owned())?;
        let sdk = self
            .sdk
            .to_builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(creds),
            )
            .build();
        Ok(Aws::from_sdk(&sdk, self.path_style, &self.region))
    }
}
