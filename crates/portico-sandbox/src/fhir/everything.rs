//! `Patient/{id}/$everything`: the Patient and every stored resource in their R4
//! Patient compartment ([`portico_fhir::compartment`]), in one searchset Bundle.
//!
//! Each compartment link that the sandbox can search (`Observation?subject=`,
//! `RelatedPerson?patient=`, `Appointment?actor=`, ...) is searched for
//! `Patient/{id}`; a resource found by several links is listed once. The answer is not
//! paged (a generated patient has a few hundred resources at most) and, like every
//! sandbox read, applies no access rule: no compartment check against the token, no
//! security-label filtering. The sandbox is the unguarded EHR.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use portico_fhir::compartment;
use portico_fhir::outcome::IssueCode;

use super::{BundleWriter, FhirError, FhirResult, fhir_response, push_json};
use crate::search::{self, MAX_COUNT, SearchQuery};
use crate::state::SandboxState;
use crate::store::StoredResource;

pub(super) async fn everything(
    State(state): State<SandboxState>,
    Path((ty, id)): Path<(String, String)>,
) -> FhirResult {
    if ty != "Patient" {
        return Err(FhirError::new(
            StatusCode::NOT_FOUND,
            IssueCode::NotSupported,
            format!(
                "$everything is not supported on {}",
                ty.chars().take(64).collect::<String>()
            ),
        ));
    }
    let patient = state.store.read("Patient", &id)?;
    let target = format!("Patient/{id}");
    let mut found: Vec<StoredResource> = vec![patient];
    for ty in search::types().iter().filter(|t| t.name != "Patient") {
        let Some(links) = compartment::patient_links(ty.name) else {
            continue;
        };
        let mut seen: HashSet<String> = HashSet::new();
        for link in links {
            let params = [
                (link.param.to_owned(), target.clone()),
                ("_count".to_owned(), MAX_COUNT.to_string()),
            ];
            // A link the sandbox has no search parameter for holds nothing it stores.
            let Ok(mut query) = SearchQuery::parse(ty, &params, false) else {
                continue;
            };
            loop {
                let result = state.store.search(&query);
                for r in result.matches {
                    if seen.insert(r.id.clone()) {
                        found.push(r);
                    }
                }
                query.offset += query.count;
                if query.offset >= result.total {
                    break;
                }
            }
        }
    }
    let self_link = format!("{}/Patient/{id}/$everything", state.fhir_base());
    let mut bundle = BundleWriter::new("searchset", Some(found.len()), &[("self", self_link)]);
    for r in &found {
        let Some(body) = &r.body else { continue };
        let out = bundle.entry();
        out.extend_from_slice(b"{\"fullUrl\":");
        push_json(out, &serde_json::Value::String(state.full_url(r)));
        out.extend_from_slice(b",\"resource\":");
        out.extend_from_slice(body);
        out.extend_from_slice(b",\"search\":{\"mode\":\"match\"}}");
    }
    Ok(fhir_response(StatusCode::OK, bundle.finish().into()))
}
