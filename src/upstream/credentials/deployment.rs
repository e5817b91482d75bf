//! A deployment's cloud credentials: the spec its provider file and parameters make, and the
//! handle to them, opened on first use so that a config that is only checked (`llmux config
//! check`, a reload that fails) never starts a fetch.

use std::sync::OnceLock;

use super::{CredentialHandle, CredentialSpec};

#[derive(Debug)]
pub struct DeploymentCredentials {
    spec: CredentialSpec,
    handle: OnceLock<CredentialHandle>,
    /// The signing region (SigV4).
    pub region: Option<String>,
}

impl DeploymentCredentials {
    pub fn new(spec: CredentialSpec, region: Option<String>) -> Self {
        DeploymentCredentials {
            spec,
            handle: OnceLock::new(),
            region,
        }
    }

    pub fn spec(&self) -> &CredentialSpec {
        &self.spec
    }

    /// The handle, opened (and the first fetch started) on the first call.
    pub fn handle(&self) -> &CredentialHandle {
        self.handle.get_or_init(|| super::handle(self.spec.clone()))
    }
}
