//! One page of verified search results, as portal code reads it.

use std::sync::Arc;

use portico_fhir::reference::Reference;
use portico_guard::{BoundSlot, KeptAnswer, Verified};
use serde_json::Value;

/// One page of search results, verified.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// `search.mode = match` entries (or entries without a mode), in order.
    pub matches: Vec<Value>,
    /// `_include`d / `_revinclude`d entries.
    pub included: Vec<Value>,
    /// The upstream `next` link (opaque; never shown to a client as is).
    pub next: Option<String>,
    pub total: Option<u64>,
    /// Entries the policy removed (never shown; counted for the audit).
    pub removed: usize,
    /// Set when any page came from an expired cache entry.
    pub stale: bool,
    /// `OperationOutcome` entries of the Bundle (warnings, or why an operation failed).
    pub outcomes: Vec<Value>,
    /// The EHR's answer was not a Bundle and the policy replaced it with an empty
    /// searchset: "no matches" here is not the EHR's word.
    pub replaced: bool,
}

impl KeptAnswer for Page {
    fn removed(&self) -> usize {
        self.removed
    }
}

impl Page {
    /// The page of a verified Bundle: `OperationOutcome`s to `outcomes`,
    /// `search.mode = include` to `included`, the rest to `matches` (each resource
    /// moved, not cloned).
    pub(crate) fn from_verified(verified: Verified) -> Page {
        let Verified {
            mut bundle,
            report,
            meta,
            ..
        } = verified;
        let mut page = Page {
            removed: report.removed,
            replaced: report.replaced,
            stale: meta.stale_age.is_some(),
            total: bundle.get("total").and_then(Value::as_u64),
            next: portico_fhir::bundle::link(&bundle, "next").map(str::to_owned),
            ..Page::default()
        };
        let Some(Value::Array(entries)) = bundle.get_mut("entry") else {
            return page;
        };
        for mut entry in entries.drain(..) {
            let Some(resource) = entry.get_mut("resource").map(Value::take) else {
                continue;
            };
            let include = entry.pointer("/search/mode").and_then(Value::as_str) == Some("include");
            if resource.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome") {
                page.outcomes.push(resource);
            } else if include {
                page.included.push(resource);
            } else {
                page.matches.push(resource);
            }
        }
        page
    }

    /// Adds the next page of the same search to this one (its `next` link replaces
    /// this one's).
    pub fn append(&mut self, page: Page) {
        self.matches.extend(page.matches);
        self.included.extend(page.included);
        self.removed += page.removed;
        self.stale |= page.stale;
        self.replaced |= page.replaced;
        self.outcomes.extend(page.outcomes);
        self.next = page.next;
    }

    /// The included resource a reference points to (`Practitioner/1`), if any.
    pub fn included(&self, reference: &str) -> Option<&Value> {
        let r = Reference::parse(reference).ok()?;
        self.included.iter().chain(self.matches.iter()).find(|v| {
            v.get("resourceType").and_then(Value::as_str) == Some(r.resource_type.as_str())
                && v.get("id").and_then(Value::as_str) == Some(r.id.as_str())
        })
    }
}

/// A verified page as [`super::Ctx::search_shared`] hands it out: shared, not copied,
/// with the cache entry's slot bound to the acting principal when the page came from a
/// cache hit (for a caller that keeps what it builds from the page, under a key naming
/// everything else it depends on). The slot is not inside the kept page: that would be
/// a reference cycle.
#[derive(Debug, Clone)]
pub struct SharedPage {
    pub page: Arc<Page>,
    pub slot: Option<BoundSlot>,
}
