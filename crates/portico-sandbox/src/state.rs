//! What the sandbox's handlers share: the store, the authorization server, the fault
//! knobs and the base URL. Its own module so that the FHIR API ([`crate::fhir`]) and
//! the server that mounts it ([`crate::server`]) both depend on it instead of on each
//! other.

use std::sync::Arc;

use crate::auth::AuthServer;
use crate::faults::Faults;
use crate::store::{Store, StoredResource};

/// What the handlers share.
#[derive(Clone)]
pub struct SandboxState {
    pub store: Arc<Store>,
    pub auth: Arc<AuthServer>,
    pub faults: Arc<Faults>,
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub base_url: Arc<str>,
    pub require_auth: bool,
}

impl std::fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxState")
            .field("base_url", &self.base_url)
            .field("require_auth", &self.require_auth)
            .field("resources", &self.store.len())
            .finish_non_exhaustive()
    }
}

impl SandboxState {
    pub(crate) fn fhir_base(&self) -> String {
        format!("{}/fhir", self.base_url)
    }

    pub(crate) fn full_url(&self, r: &StoredResource) -> String {
        format!("{}/fhir/{}/{}", self.base_url, r.resource_type, r.id)
    }

    pub(crate) fn version_url(&self, r: &StoredResource) -> String {
        format!("{}/_history/{}", self.full_url(r), r.version)
    }
}
