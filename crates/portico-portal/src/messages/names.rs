//! The participants' names: looked up once each through the [`Ctx`] (so only what the
//! patient may read is read), from the resources a search included or by reads made at
//! the same time, else the reference's own `display`.

use std::collections::HashMap;

use portico_fhir::reference::Reference;
use serde_json::Value;

use super::views::Participant;
use crate::context::Ctx;
use crate::me::display_name;
use crate::view::{reference_of, str_at};

/// The most distinct participants whose names are looked up for one answer.
const MAX_NAME_LOOKUPS: usize = 32;

/// Looks up display names of references, once each, through the Ctx (so only what the
/// patient may read is read); falls back to the reference's own `display`.
pub(super) struct Names<'c, 'a> {
    ctx: &'c Ctx<'a>,
    known: HashMap<String, Option<String>>,
}

impl<'c, 'a> Names<'c, 'a> {
    pub(super) fn new(ctx: &'c Ctx<'a>) -> Self {
        Names {
            ctx,
            known: HashMap::new(),
        }
    }

    pub(super) async fn participant(&mut self, reference: &Value) -> Option<Participant> {
        let literal = reference_of(reference)?;
        let parsed = Reference::parse(literal).ok()?;
        let is_me = parsed.is("Patient", self.ctx.patient());
        let key = parsed.relative();
        let display = match self.known.get(&key) {
            Some(d) => d.clone(),
            None => {
                let looked_up = if self.known.len() < MAX_NAME_LOOKUPS {
                    self.look_up(&parsed).await
                } else {
                    None
                };
                let d = looked_up.or_else(|| str_at(reference, "display").map(str::to_owned));
                self.known.insert(key.clone(), d.clone());
                d
            }
        };
        Some(Participant {
            reference: key,
            display,
            is_me,
        })
    }

    async fn look_up(&self, r: &Reference) -> Option<String> {
        look_up(self.ctx, r).await
    }

    /// Learns the names of these references other than the acting patient's all at
    /// once: from the included resources (which the [`Ctx`] verified like reads), else
    /// read — at the same time, at most [`MAX_NAME_LOOKUPS`] of them — else the
    /// reference's `display` where it first appears. [`Names::participant`] then answers
    /// them without a call.
    pub(super) async fn learn<'v>(
        &mut self,
        references: impl IntoIterator<Item = &'v Value>,
        included: &[Value],
    ) {
        let patient = self.ctx.patient();
        // Distinct references in order of appearance, with their first `display`.
        let mut seen: Vec<(Reference, Option<&str>)> = Vec::new();
        for r in references {
            let Some(parsed) = reference_of(r).and_then(|l| Reference::parse(l).ok()) else {
                continue;
            };
            if parsed.is("Patient", patient)
                || self.known.contains_key(&parsed.relative())
                || seen.iter().any(|(s, _)| s.relative() == parsed.relative())
            {
                continue;
            }
            seen.push((parsed, str_at(r, "display")));
        }
        let from_include = |r: &Reference| -> Option<Option<String>> {
            if !named_type(&r.resource_type) {
                return Some(None);
            }
            included
                .iter()
                .find(|v| {
                    str_at(v, "resourceType") == Some(r.resource_type.as_str())
                        && str_at(v, "id") == Some(r.id.as_str())
                })
                .map(|v| name_of(&r.resource_type, v))
        };
        let mut names: Vec<Option<Option<String>>> =
            seen.iter().map(|(r, _)| from_include(r)).collect();
        let to_read: Vec<usize> = (0..seen.len())
            .filter(|&i| names[i].is_none())
            .take(MAX_NAME_LOOKUPS)
            .collect();
        let read =
            futures::future::join_all(to_read.iter().map(|&i| self.look_up(&seen[i].0))).await;
        for (i, name) in to_read.into_iter().zip(read) {
            names[i] = Some(name);
        }
        for ((r, display), name) in seen.into_iter().zip(names) {
            let name = name.flatten().or_else(|| display.map(str::to_owned));
            self.known.insert(r.relative(), name);
        }
    }
}

/// Whether a participant of this type has a name worth looking up.
fn named_type(resource_type: &str) -> bool {
    matches!(
        resource_type,
        "Patient" | "Practitioner" | "CareTeam" | "Organization" | "Group"
    )
}

/// The name of a participant's resource.
fn name_of(resource_type: &str, resource: &Value) -> Option<String> {
    match resource_type {
        "Patient" | "Practitioner" => display_name(resource),
        _ => str_at(resource, "name").map(str::to_owned),
    }
}

/// Reads a participant's name through the Ctx (only what the patient may read).
async fn look_up(ctx: &Ctx<'_>, r: &Reference) -> Option<String> {
    if !named_type(&r.resource_type) {
        return None;
    }
    let resource = ctx.read(&r.resource_type, &r.id).await.ok()?.resource;
    name_of(&r.resource_type, &resource)
}
