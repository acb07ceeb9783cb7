//! [`Policy::verify_bundle_bytes`]: the outbound check of a Bundle made entry by entry on
//! its bytes, without a tree of the whole Bundle and without writing the kept entries
//! out again.
//!
//! The Bundle's members other than `entry` are parsed (they are small: `type`, `total`,
//! `link`); `entry` is split into the raw text of each entry. Of each entry only what the
//! check reads becomes a tree: `search`, and of `resource` the members
//! `Policy::members_read_by_check` names for its type (type, id, `meta`, the elements
//! compartment links and scope filters walk); the rest is skipped unparsed. That
//! projection is checked with the same decision as [`Policy::verify_bundle`] (the tree
//! verifier, which stays the reference) and the entry is dropped or kept *as it came*:
//! a kept entry costs a copy of its bytes, not a serialization.
//!
//! An entry is kept as it came only when its text means exactly what was checked: JSON
//! allows a key twice in an object, parsers differ on which one wins, and a tree keeps
//! the last. When a key repeats in the entry, in its resource, or inside a member the
//! check parsed, the entry is parsed whole and checked and written from that tree,
//! exactly as the tree verifier would (a repeat inside a member the check does not read
//! changes nothing the check decides). Anything that is not an object whose
//! `resourceType` is `Bundle` goes through the tree verifier as a whole.
//!
//! One difference remains, on texts no EHR should send: a skipped member is only checked
//! for JSON syntax, so an escape of a lone UTF-16 surrogate (`"\ud800"`) there is passed
//! on where the tree verifier refuses the whole answer as malformed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Principal;
use crate::policy::{Policy, VerifyReport, correct_total, counts_as_match, is_searchset};

/// A Bundle verified by [`Policy::verify_bundle_bytes`]: the members other than `entry`
/// as a tree (for the caller to rewrite links in), and the kept entries as text.
#[derive(Debug, Clone)]
pub struct VerifiedBytes {
    /// The Bundle without its entries, `total` corrected like the tree verifier does.
    pub head: Value,
    /// The kept entries, in order; `None` when the verified Bundle has no `entry` array.
    entries: Option<Vec<KeptEntry>>,
    /// The text the kept entries' spans point into.
    body: Bytes,
    pub report: VerifyReport,
}

#[derive(Debug, Clone)]
enum KeptEntry {
    /// Kept as it came: a span of the body.
    Span(std::ops::Range<usize>),
    /// Written from the checked tree (its text repeated a key).
    Written(String),
}

impl VerifiedBytes {
    /// A Bundle the tree verifier handled as a whole (or one a caller verified with it).
    pub fn from_tree(bundle: Value, report: VerifyReport) -> VerifiedBytes {
        VerifiedBytes {
            head: bundle,
            entries: None,
            body: Bytes::new(),
            report,
        }
    }

    /// The verified Bundle's JSON: `head`, with the kept entries as its last member.
    pub fn to_json(&self) -> Vec<u8> {
        let Some(entries) = &self.entries else {
            // A `Value` always serializes (its keys are strings).
            return serde_json::to_vec(&self.head).unwrap_or_default();
        };
        let mut out = self.head_and_entry_start();
        let spans: usize = entries
            .iter()
            .map(|e| match e {
                KeptEntry::Span(r) => r.len() + 1,
                KeptEntry::Written(s) => s.len() + 1,
            })
            .sum();
        out.reserve(spans + 2);
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match entry {
                KeptEntry::Span(r) => out.extend_from_slice(&self.body[r.clone()]),
                KeptEntry::Written(s) => out.extend_from_slice(s.as_bytes()),
            }
        }
        out.extend_from_slice(b"]}");
        out
    }

    /// `head`'s text without its closing brace, then `"entry":[`.
    fn head_and_entry_start(&self) -> Vec<u8> {
        // A `Value` always serializes (its keys are strings).
        let mut out = serde_json::to_vec(&self.head).unwrap_or_default();
        // `head` is an object: its text ends with `}`.
        out.pop();
        if out.len() > 1 {
            out.push(b',');
        }
        out.extend_from_slice(b"\"entry\":[");
        out
    }
}

impl Policy {
    /// [`Policy::verify_bundle`] on a Bundle's bytes, entry by entry (see the module
    /// docs): the same entries kept, the same `total`, the same report; an error when
    /// `body` is not JSON.
    pub fn verify_bundle_bytes(
        &self,
        principal: &Principal,
        body: Bytes,
    ) -> Result<VerifiedBytes, serde_json::Error> {
        let starts_object = body
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'{');
        if !starts_object {
            return self.whole_tree(principal, &body);
        }
        let split: Split<'_> = serde_json::from_slice(&body)?;
        let mut head = Value::Object(split.head);
        if portico_fhir::json::resource_type(&head) != Some("Bundle") {
            return self.whole_tree(principal, &body);
        }
        let mut report = VerifyReport::default();
        let raw_entries = match split.entry {
            None => None,
            Some(EntryField::Null) => {
                // The tree verifier leaves an `entry` of null where it was.
                head["entry"] = Value::Null;
                None
            }
            Some(EntryField::Entries(entries)) => Some(entries),
            Some(EntryField::Other) => {
                // Not an array: it cannot be verified entry by entry, and goes.
                report.removed += 1;
                None
            }
        };
        let grants = self.grants(principal);
        let searchset = is_searchset(&head);
        let mut matches = 0;
        let entries = match raw_entries {
            None => None,
            Some(raw_entries) => {
                let mut kept = Vec::with_capacity(raw_entries.len());
                let mut read_by_check = HashMap::new();
                for raw in raw_entries {
                    let text = raw.get();
                    let (entry, exact) = match self.project_entry(text, &mut read_by_check)? {
                        Some(projected) => (projected, true),
                        None => {
                            let entry: Value = serde_json::from_str(text)?;
                            let exact = members_in_text(text) == members_in_tree(&entry);
                            (entry, exact)
                        }
                    };
                    if !self.keeps_entry(&grants, searchset, &entry) {
                        report.removed += 1;
                        continue;
                    }
                    report.kept += 1;
                    if counts_as_match(&entry) {
                        matches += 1;
                    }
                    kept.push(if exact {
                        KeptEntry::Span(span_of(&body, text))
                    } else {
                        KeptEntry::Written(serde_json::to_string(&entry)?)
                    });
                }
                Some(kept)
            }
        };
        correct_total(&mut head, &grants, report, |_| matches);
        Ok(VerifiedBytes {
            head,
            entries,
            body,
            report,
        })
    }

    /// What the check reads of one entry's text: `search`, and the members of
    /// `resource` it looks at (see the module docs). `None` when the entry must be parsed
    /// whole instead: it is not an object, its resource is not one, or a key repeats
    /// where it matters.
    fn project_entry(
        &self,
        text: &str,
        read_by_check: &mut HashMap<String, Vec<String>>,
    ) -> Result<Option<Value>, serde_json::Error> {
        if !text.starts_with('{') {
            return Ok(None);
        }
        // An error here is a resource that is not an object, or a text that is not JSON:
        // the whole parse says which.
        let Ok(parts) = serde_json::from_str::<EntryParts<'_>>(text) else {
            return Ok(None);
        };
        if parts.repeats {
            return Ok(None);
        }
        let mut entry = Map::new();
        if let Some(search) = parts.search {
            let Some(search) = parse_exact(search)? else {
                return Ok(None);
            };
            entry.insert("search".to_owned(), search);
        }
        match parts.resource {
            None => {}
            Some(fields) => {
                if fields.repeats() {
                    return Ok(None);
                }
                let mut projected = Map::new();
                if let Some(raw) = fields.get("resourceType") {
                    let Some(resource_type) = parse_exact(raw)? else {
                        return Ok(None);
                    };
                    if let Some(t) = resource_type.as_str() {
                        if !read_by_check.contains_key(t) {
                            read_by_check.insert(t.to_owned(), self.members_read_by_check(t));
                        }
                        let wanted = &read_by_check[t];
                        for (key, raw) in &fields.0 {
                            if key != "resourceType" && wanted.iter().any(|w| w == key) {
                                let Some(value) = parse_exact(raw)? else {
                                    return Ok(None);
                                };
                                projected.insert(key.to_string(), value);
                            }
                        }
                    }
                    projected.insert("resourceType".to_owned(), resource_type);
                }
                entry.insert("resource".to_owned(), Value::Object(projected));
            }
        }
        Ok(Some(Value::Object(entry)))
    }

    fn whole_tree(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<VerifiedBytes, serde_json::Error> {
        let mut bundle: Value = serde_json::from_slice(body)?;
        let report = self.verify_bundle(principal, &mut bundle);
        Ok(VerifiedBytes::from_tree(bundle, report))
    }
}

/// Where `part` (a slice of `body`'s text) lies in `body`.
fn span_of(body: &[u8], part: &str) -> std::ops::Range<usize> {
    let start = part.as_ptr() as usize - body.as_ptr() as usize;
    debug_assert!(start + part.len() <= body.len());
    start..start + part.len()
}

/// Object members written in a JSON text: its colons outside strings.
fn members_in_text(json: &str) -> usize {
    let mut members = 0;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b == b':' {
            members += 1;
        }
    }
    members
}

/// Object members in a parsed tree (fewer than in its text when a key repeated).
fn members_in_tree(value: &Value) -> usize {
    match value {
        Value::Object(map) => map.len() + map.values().map(members_in_tree).sum::<usize>(),
        Value::Array(items) => items.iter().map(members_in_tree).sum(),
        _ => 0,
    }
}

/// A member's tree, or `None` when a key repeats somewhere in its text.
fn parse_exact(raw: &RawValue) -> Result<Option<Value>, serde_json::Error> {
    let value: Value = serde_json::from_str(raw.get())?;
    Ok((members_in_text(raw.get()) == members_in_tree(&value)).then_some(value))
}

/// The members of one JSON object, in order, each value as its text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Whether a key is given twice.
    fn repeats(&self) -> bool {
        self.0
            .iter()
            .enumerate()
            .any(|(i, (k, _))| self.0[..i].iter().any(|(earlier, _)| earlier == k))
    }
}

/// Reads an object's members, each value as its text.
fn members_of<'de, A: MapAccess<'de>>(mut map: A) -> Result<Members<'de>, A::Error> {
    let mut members = Vec::new();
    while let Some(Key(key)) = map.next_key()? {
        members.push((key, map.next_value::<&'de RawValue>()?));
    }
    Ok(Members(members))
}

/// One entry, split in one pass: its `search` as text, its `resource` as members (an
/// error when it is not an object), the rest skipped; and whether a key repeated.
struct EntryParts<'a> {
    search: Option<&'a RawValue>,
    resource: Option<Members<'a>>,
    repeats: bool,
}

impl<'de> Deserialize<'de> for EntryParts<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = EntryParts<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bundle entry")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryParts<'de>, A::Error> {
                let mut parts = EntryParts {
                    search: None,
                    resource: None,
                    repeats: false,
                };
                let mut keys: Vec<Cow<'de, str>> = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    match &*key {
                        "search" => parts.search = Some(map.next_value()?),
                        "resource" => parts.resource = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                    parts.repeats |= keys.contains(&key);
                    keys.push(key);
                }
                Ok(parts)
            }
        }
        deserializer.deserialize_map(EntryVisitor)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Members<'de>, A::Error> {
                members_of(map)
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

/// An object key, borrowed from the text when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A Bundle object split into its `entry` (as text) and everything else (as a tree).
/// A member given twice keeps the last, as a tree would.
struct Split<'a> {
    head: Map<String, Value>,
    entry: Option<EntryField<'a>>,
}

/// A Bundle's `entry` member: its entries as text, or what else it is.
enum EntryField<'a> {
    Entries(Vec<&'a RawValue>),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for EntryField<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = EntryField<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Bundle's entries")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<EntryField<'de>, A::Error> {
                let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(entry) = seq.next_element()? {
                    entries.push(entry);
                }
                Ok(EntryField::Entries(entries))
            }

            fn visit_unit<E>(self) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Null)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EntryField<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(EntryField::Other)
            }

            fn visit_bool<E>(self, _: bool) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Other)
            }

            fn visit_i64<E>(self, _: i64) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Other)
            }

            fn visit_u64<E>(self, _: u64) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Other)
            }

            fn visit_f64<E>(self, _: f64) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Other)
            }

            fn visit_str<E>(self, _: &str) -> Result<EntryField<'de>, E> {
                Ok(EntryField::Other)
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for Split<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SplitVisitor)
    }
}

struct SplitVisitor;

impl<'de> Visitor<'de> for SplitVisitor {
    type Value = Split<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Split<'de>, A::Error> {
        let mut head = Map::new();
        let mut entry = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "entry" {
                entry = Some(map.next_value::<EntryField<'de>>()?);
            } else {
                let value: Value = map.next_value()?;
                head.insert(key, value);
            }
        }
        Ok(Split { head, entry })
    }
}

pub mod splice;
#[cfg(test)]
mod tests;
