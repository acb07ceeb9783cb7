//! [`Policy::verify_bundle_bytes`]: the outbound check of a Bundle made entry by entry on
//! its bytes, without a tree of the whole Bundle and without writing the kept entries
//! out again.
//!
//! One pass of [`Scanner`] over the text checks that it is JSON and splits it: the
//! Bundle's members other than `entry` (they are small: `type`, `total`, `link`) are
//! then parsed; each entry is cut into its `search` and its resource's members, as text.
//! Of each entry only what the check reads becomes a tree: `search`, and of `resource`
//! the members `Policy::members_read_by_check` names for its type (type, id, `meta`, the
//! elements compartment links walk, and those scope filters walk when the principal has a
//! filtered scope); the rest is only scanned. That
//! projection is checked with the same decision as [`Policy::verify_bundle`] (the tree
//! verifier, which stays the reference) and the entry is dropped or kept *as it came*:
//! a kept entry costs a copy of its bytes, not a serialization.
//!
//! An entry is kept as it came only when its text means exactly what was checked: JSON
//! allows a key twice in an object, parsers differ on which one wins, and a tree keeps
//! the last. When a key repeats in the entry, in its resource, or inside a member the
//! check parsed, the entry is parsed whole and checked and written from that tree,
//! exactly as the tree verifier would (a repeat inside a member the check does not read
//! changes nothing the check decides; a repeat inside a member it parsed is seen while
//! parsing it, [`ExactValue`]). Anything that is not an object whose `resourceType` is
//! `Bundle`, and any text the scanner refuses, goes through the tree verifier as a whole
//! (whose parse gives the error).
//!
//! One difference remains, on texts no EHR should send: a skipped member is only checked
//! for JSON syntax, so an escape of a lone UTF-16 surrogate (`"\ud800"`) or a number too
//! large for an `f64` (`1e400`) there is passed on where the tree verifier refuses the
//! whole answer as malformed.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use portico_fhir::scan::{ScanError, Scanner};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::policy::{Grants, Policy, VerifyReport, correct_total, counts_as_match, is_searchset};
use crate::{Denial, Principal};

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

/// What checking a Bundle's entries needs besides each entry and the principal's
/// grants, and what it counted.
#[derive(Debug)]
struct EntryCheck {
    /// Whether a scope of the principal filters (its filters read more members).
    filtered: bool,
    searchset: bool,
    /// The members the check reads, by resource type.
    read_by_check: HashMap<String, Vec<String>>,
    report: VerifyReport,
    /// Kept entries that count in a corrected `total`.
    matches: usize,
}

/// A kept entry: its text as it came, or written from the tree that was checked (its
/// text repeated a key).
enum Kept<'t> {
    AsItCame(&'t str),
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
        // Anything the scan cannot take (not an object, or not JSON: the tree's parse
        // gives the error) goes to the tree verifier.
        let Ok(Some(scanned)) = scan_bundle(&body) else {
            return self.whole_tree(principal, &body);
        };
        let mut head = Map::new();
        for (key, text) in scanned.head {
            head.insert(key.into_owned(), serde_json::from_str(text)?);
        }
        let mut head = Value::Object(head);
        if portico_fhir::json::resource_type(&head) != Some("Bundle") {
            return self.whole_tree(principal, &body);
        }
        let grants = self.grants(principal);
        let mut check = self.entry_check(principal, is_searchset(&head));
        let raw_entries = match scanned.entry {
            None => None,
            Some(EntryField::Null) => {
                // The tree verifier leaves an `entry` of null where it was.
                head["entry"] = Value::Null;
                None
            }
            Some(EntryField::Entries(entries)) => Some(entries),
            Some(EntryField::Other) => {
                // Not an array: it cannot be verified entry by entry, and goes.
                check.report.removed += 1;
                None
            }
        };
        let entries = match raw_entries {
            None => None,
            Some(raw_entries) => {
                let mut kept = Vec::with_capacity(raw_entries.len());
                for raw in &raw_entries {
                    match self.check_entry(&grants, &mut check, raw)? {
                        None => {}
                        Some(Kept::AsItCame(text)) => {
                            kept.push(KeptEntry::Span(span_of(&body, text)))
                        }
                        Some(Kept::Written(text)) => kept.push(KeptEntry::Written(text)),
                    }
                }
                Some(kept)
            }
        };
        correct_total(&mut head, &grants, check.report, |_| check.matches);
        Ok(VerifiedBytes {
            head,
            entries,
            body,
            report: check.report,
        })
    }

    /// What checking the entries of one Bundle needs, set up once.
    fn entry_check(&self, principal: &Principal, searchset: bool) -> EntryCheck {
        EntryCheck {
            filtered: principal
                .scopes
                .resource_scopes()
                .iter()
                .any(|scope| scope.filter.is_some()),
            searchset,
            read_by_check: HashMap::new(),
            report: VerifyReport::default(),
            matches: 0,
        }
    }

    /// Checks one entry with the tree verifier's decision, counted in `check`: `None`
    /// when it goes, otherwise how it is written out.
    fn check_entry<'t>(
        &self,
        grants: &Result<Grants<'_>, Denial>,
        check: &mut EntryCheck,
        raw: &ScannedEntry<'t>,
    ) -> Result<Option<Kept<'t>>, serde_json::Error> {
        let projected = match &raw.parts {
            Some(parts) => self.project_entry(parts, check.filtered, &mut check.read_by_check)?,
            None => None,
        };
        let (entry, exact) = match projected {
            Some(projected) => (projected, true),
            None => {
                let (entry, repeated) = parse_noting_repeats(raw.text)?;
                (entry, !repeated)
            }
        };
        if !self.keeps_entry(grants, check.searchset, &entry) {
            check.report.removed += 1;
            return Ok(None);
        }
        check.report.kept += 1;
        if counts_as_match(&entry) {
            check.matches += 1;
        }
        Ok(Some(if exact {
            Kept::AsItCame(raw.text)
        } else {
            Kept::Written(serde_json::to_string(&entry)?)
        }))
    }

    /// What the check reads of one entry: `search`, and the members of `resource` it
    /// looks at (see the module docs). `None` when the entry must be parsed whole
    /// instead: a key repeats where it matters.
    fn project_entry(
        &self,
        parts: &EntryParts<'_>,
        filtered: bool,
        read_by_check: &mut HashMap<String, Vec<String>>,
    ) -> Result<Option<Value>, serde_json::Error> {
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
        if let Some(fields) = &parts.resource {
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
                        read_by_check.insert(t.to_owned(), self.members_read_by_check(t, filtered));
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

/// A member's tree, or `None` when a key repeats somewhere in its text.
fn parse_exact(text: &str) -> Result<Option<Value>, serde_json::Error> {
    let (value, repeated) = parse_noting_repeats(text)?;
    Ok((!repeated).then_some(value))
}

/// A text's tree, as `serde_json` builds it, and whether a key repeated anywhere in it
/// (the tree keeps the last).
fn parse_noting_repeats(text: &str) -> Result<(Value, bool), serde_json::Error> {
    let mut repeated = false;
    let value =
        ExactValue(&mut repeated).deserialize(&mut serde_json::Deserializer::from_str(text))?;
    Ok((value, repeated))
}

/// Deserializes a `Value` as `serde_json` does, and sets the flag when an object in it
/// gives a key twice (the tree keeps the last).
struct ExactValue<'r>(&'r mut bool);

impl<'de> DeserializeSeed<'de> for ExactValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ExactValue<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(ExactValue(&mut *self.0))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ExactValue(&mut *self.0))?;
            if members.insert(key, value).is_some() {
                *self.0 = true;
            }
        }
        Ok(Value::Object(members))
    }
}

/// A Bundle's text in one pass of the [`Scanner`]: its members other than `entry` as
/// text, and each entry split into what the check reads.
struct Scanned<'a> {
    /// In order; a key given twice is there twice (the later one wins, as in a tree).
    head: Vec<(Cow<'a, str>, &'a str)>,
    entry: Option<EntryField<'a>>,
}

/// A Bundle's `entry` member: its entries, or what else it is.
enum EntryField<'a> {
    Entries(Vec<ScannedEntry<'a>>),
    Null,
    Other,
}

/// One entry's text, and its parts when it is an object whose `resource` (if any) is
/// one too.
struct ScannedEntry<'a> {
    text: &'a str,
    parts: Option<EntryParts<'a>>,
}

/// One entry's `search` as text, its `resource` as members, and whether a key of the
/// entry repeated.
struct EntryParts<'a> {
    search: Option<&'a str>,
    resource: Option<Members<'a>>,
    repeats: bool,
}

/// The members of one JSON object, in order, each value as its text.
struct Members<'a>(Vec<(Cow<'a, str>, &'a str)>);

impl<'a> Members<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
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

/// Splits a Bundle's text (see [`Scanned`]); `None` when it is not an object.
fn scan_bundle(body: &[u8]) -> Result<Option<Scanned<'_>>, ScanError> {
    let mut s = Scanner::new(body)?;
    if s.peek() != Some(b'{') {
        return Ok(None);
    }
    let text = s.text();
    s.enter_object()?;
    let mut head = Vec::new();
    let mut entry = None;
    while let Some(key) = s.next_key()? {
        if key == "entry" {
            entry = Some(match s.peek() {
                Some(b'[') => EntryField::Entries(scan_entries(&mut s)?),
                Some(b'n') => {
                    s.skip_value()?;
                    EntryField::Null
                }
                _ => {
                    s.skip_value()?;
                    EntryField::Other
                }
            });
        } else {
            let span = s.skip_value()?;
            head.push((key, &text[span]));
        }
    }
    s.end()?;
    Ok(Some(Scanned { head, entry }))
}

/// The entries of the array at the scanner.
fn scan_entries<'a>(s: &mut Scanner<'a>) -> Result<Vec<ScannedEntry<'a>>, ScanError> {
    let mut entries = Vec::new();
    s.enter_array()?;
    while s.next_element()? {
        entries.push(scan_entry(s)?);
    }
    Ok(entries)
}

/// The entry at the scanner: its text, and its parts when it is an object.
fn scan_entry<'a>(s: &mut Scanner<'a>) -> Result<ScannedEntry<'a>, ScanError> {
    let text = s.text();
    if s.peek() != Some(b'{') {
        let span = s.skip_value()?;
        return Ok(ScannedEntry {
            text: &text[span],
            parts: None,
        });
    }
    let start = s.offset();
    let mut parts = Some(EntryParts {
        search: None,
        resource: None,
        repeats: false,
    });
    let mut keys: Vec<Cow<'a, str>> = Vec::new();
    s.enter_object()?;
    while let Some(key) = s.next_key()? {
        match (&*key, &mut parts) {
            ("search", Some(parts)) => parts.search = Some(&text[s.skip_value()?]),
            ("resource", Some(p)) if s.peek() == Some(b'{') => {
                p.resource = Some(scan_members(s)?);
            }
            ("resource", _) => {
                // Not an object: the entry is parsed whole.
                s.skip_value()?;
                parts = None;
            }
            _ => {
                s.skip_value()?;
            }
        }
        if let Some(parts) = &mut parts {
            parts.repeats |= keys.contains(&key);
        }
        keys.push(key);
    }
    Ok(ScannedEntry {
        text: &text[start..s.offset()],
        parts,
    })
}

/// The members of the object at the scanner, each value as its text.
fn scan_members<'a>(s: &mut Scanner<'a>) -> Result<Members<'a>, ScanError> {
    let text = s.text();
    let mut members = Vec::new();
    s.enter_object()?;
    while let Some(key) = s.next_key()? {
        let span = s.skip_value()?;
        members.push((key, &text[span]));
    }
    Ok(Members(members))
}

pub mod splice;
pub mod stream;
#[cfg(test)]
mod tests;
