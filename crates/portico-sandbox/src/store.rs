//! The sandbox's in-memory, versioned, thread-safe resource store.
//!
//! Every version of every resource is kept as compact serialized JSON ([`Bytes`]), never
//! as a `serde_json::Value`, so that 100k generated patients fit in a few GB; responses
//! and Bundles are assembled from those bytes without re-parsing. At write time a small
//! search index is extracted from the resource (see [`crate::search`]): reference
//! targets, token system/code pairs and strings interned as `u32` atoms, and dates as
//! epoch-millisecond ranges. Reference fields (and `identifier`) also get an inverted
//! index, so `Observation?patient=X` touches only X's Observations.
//!
//! Invariants:
//! - the last version of a slot is its current state; a deleted resource's last
//!   version has no body and the slot's index is empty;
//! - every posting list of the inverted index is sorted and holds exactly the slots whose
//!   current index has that (field, atom) entry;
//! - version numbers of one resource are 1, 2, 3, ... with no gaps, and each write
//!   (create, update, delete) happens under one write lock together with its checks
//!   (`If-Match`, `If-None-Exist`), so concurrent writers cannot both win;
//! - the EHR's business rules ([`crate::rules`]: a booked Appointment makes its Slot
//!   busy, ...) run inside that same lock for every write except the bulk load, and the
//!   writes they add are stored together with the write or not at all;
//! - `meta` is kept as written except `versionId` and `lastUpdated`, which the store
//!   sets; an update without security labels keeps the replaced version's ([`labels`]).

mod labels;
mod query;
mod transaction;

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use parking_lot::RwLock;
use portico_fhir::search::DateRange;
use serde_json::{Map, Value};

pub use transaction::{TxOp, TxOutcome};

use crate::rules;
use crate::search::{
    self, Criterion, Extracted, IncludeSpec, SearchQuery, SortBy, StringMatch, TypeInfo,
};

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("resource type '{0}' is not supported")]
    UnknownType(String),
    #[error("{resource_type}/{id} is not known")]
    NotFound { resource_type: String, id: String },
    #[error("{resource_type}/{id} has been deleted")]
    Gone {
        resource_type: String,
        id: String,
        version: u32,
    },
    #[error("version mismatch: expected {expected}, the current version is {current}")]
    VersionMismatch { expected: u32, current: String },
    #[error("the condition matched {0} resources")]
    MultipleMatches(usize),
    #[error("invalid resource: {0}")]
    Invalid(String),
    /// A business rule refused the write ([`crate::rules`]), e.g. "slot is not free".
    #[error("{0}")]
    Conflict(String),
}

impl From<rules::RuleError> for StoreError {
    fn from(e: rules::RuleError) -> StoreError {
        match e {
            rules::RuleError::Conflict(message) => StoreError::Conflict(message),
        }
    }
}

/// A write a business rule added, prepared and ready to store.
struct RuleWrite {
    ty: &'static TypeInfo,
    id: String,
    prepared: Prepared,
}

/// The state a transaction's business rules see: the store with the transaction's
/// earlier writes applied (`None`: deleted).
struct Overlay<'a> {
    inner: &'a Inner,
    pending: HashMap<(&'static str, String), Option<Value>>,
}

impl rules::View for Overlay<'_> {
    fn current(&self, ty: &str, id: &str) -> Option<Value> {
        match self.pending.iter().find(|((t, i), _)| *t == ty && i == id) {
            Some((_, value)) => value.clone(),
            None => rules::View::current(self.inner, ty, id),
        }
    }
}

impl rules::View for Inner {
    fn current(&self, ty: &str, id: &str) -> Option<Value> {
        let ty = search::type_info(ty)?;
        let body = self.slot(ty, id).ok()?.current().body.as_ref()?;
        serde_json::from_slice(body).ok()
    }
}

/// How a version came to be, for `_history` Bundles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Create,
    Update,
    Delete,
}

/// One stored version of a resource.
#[derive(Debug, Clone)]
pub struct StoredResource {
    pub resource_type: &'static str,
    pub id: String,
    pub version: u32,
    /// `meta.lastUpdated` in epoch milliseconds.
    pub last_updated_ms: i64,
    pub method: Method,
    /// The serialized resource; `None` for a deletion.
    pub body: Option<Bytes>,
}

impl StoredResource {
    /// The weak ETag of this version, `W/"n"`.
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }

    /// `meta.lastUpdated` as a timestamp.
    pub fn last_updated(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.last_updated_ms)
            .single()
            .unwrap_or_default()
    }

    /// `Type/id`.
    pub fn relative(&self) -> String {
        format!("{}/{}", self.resource_type, self.id)
    }
}

/// What a (conditional) create did.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new resource was stored.
    New(StoredResource),
    /// `If-None-Exist` matched exactly this resource; nothing was stored.
    Existing(StoredResource),
}

/// One page of search results.
#[derive(Debug, Clone, Default)]
pub struct SearchResult {
    /// How many resources matched in all.
    pub total: usize,
    /// The matches on the requested page, in order.
    pub matches: Vec<StoredResource>,
    /// Resources added by `_include` / `_revinclude`.
    pub includes: Vec<StoredResource>,
}

/// The most resources `_include`/`_revinclude` add to one page.
const MAX_INCLUDES: usize = 5000;
const NO_SYSTEM: u32 = u32::MAX;

/// The store. Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Store {
    inner: RwLock<Inner>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new()
    }
}

#[derive(Debug)]
struct Inner {
    tables: Vec<Table>,
    atoms: Interner,
}

#[derive(Debug, Default)]
struct Interner {
    map: FxMap<Arc<str>, u32>,
    strings: Vec<Arc<str>>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&atom) = self.map.get(s) {
            return atom;
        }
        let atom = self.strings.len() as u32;
        let s: Arc<str> = Arc::from(s);
        self.strings.push(s.clone());
        self.map.insert(s, atom);
        atom
    }

    fn get(&self, s: &str) -> Option<u32> {
        self.map.get(s).copied()
    }

    fn resolve(&self, atom: u32) -> &str {
        self.strings.get(atom as usize).map_or("", |s| s)
    }
}

#[derive(Debug, Default)]
struct Table {
    by_id: FxMap<Arc<str>, u32>,
    slots: Vec<Slot>,
    inverted: FxMap<(u8, u32), Vec<u32>>,
    live: usize,
}

/// One resource: its current version inline (most resources only ever have one), older
/// versions, and the search index of the current version.
#[derive(Debug)]
struct Slot {
    id: Arc<str>,
    current: Version,
    older: Vec<Version>,
    index: Box<[Entry]>,
}

impl Slot {
    fn current(&self) -> &Version {
        &self.current
    }

    fn is_live(&self) -> bool {
        self.current.body.is_some()
    }

    /// Every version, oldest first.
    fn versions(&self) -> impl DoubleEndedIterator<Item = &Version> {
        self.older.iter().chain(std::iter::once(&self.current))
    }
}

#[derive(Debug, Clone)]
struct Version {
    number: u32,
    method: Method,
    last_updated_ms: i64,
    body: Option<Bytes>,
}

#[derive(Debug)]
enum Entry {
    Ref { field: u8, atom: u32 },
    Token { field: u8, system: u32, code: u32 },
    Date { field: u8, start: i64, end: i64 },
    Str { field: u8, value: Box<str> },
}

impl Entry {
    fn field(&self) -> u8 {
        match self {
            Entry::Ref { field, .. }
            | Entry::Token { field, .. }
            | Entry::Date { field, .. }
            | Entry::Str { field, .. } => *field,
        }
    }

    /// The inverted-index key of this entry, if its field has one.
    fn inverted_key(&self, ty: &TypeInfo) -> Option<(u8, u32)> {
        let field = self.field();
        if !ty.fields.get(field as usize)?.inverted {
            return None;
        }
        match self {
            Entry::Ref { atom, .. } => Some((field, *atom)),
            Entry::Token { code, .. } => Some((field, *code)),
            _ => None,
        }
    }
}

/// A resource ready to be stored: its serialized bytes and extracted index values.
struct Prepared {
    body: Bytes,
    index: Vec<(u8, Extracted)>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn format_instant(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The store's internal hash maps are keyed by ids and interned atoms; FxHash (rustc's
/// hasher, with a finalizer) is several times faster than SipHash on such short keys,
/// which matters when millions of resources are loaded at start-up. The sandbox is a
/// test server, so hash flooding is not a concern.
#[derive(Debug, Clone, Copy, Default)]
struct FxBuild;

impl std::hash::BuildHasher for FxBuild {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

#[derive(Debug)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    /// FxHash's multiply only carries entropy upwards, and hashbrown picks buckets with
    /// the low bits: ids that differ in their last characters would collide. A
    /// splitmix64 finalizer spreads every input bit over the whole hash.
    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// Sets `id` and `meta.versionId`/`meta.lastUpdated` (in place, so a retry can prepare
/// the same value again), extracts the index and serializes.
fn prepare(
    ty: &TypeInfo,
    id: &str,
    version: u32,
    last_updated_ms: i64,
    resource: &mut Value,
) -> Result<Prepared, StoreError> {
    let Value::Object(map) = resource else {
        return Err(StoreError::Invalid("a resource is a JSON object".into()));
    };
    match map.get_mut("id") {
        Some(existing) => *existing = Value::String(id.to_owned()),
        None => {
            let at = map
                .keys()
                .position(|k| k == "resourceType")
                .map_or(0, |i| i + 1);
            map.shift_insert(at, "id".into(), Value::String(id.to_owned()));
        }
    }
    let version_id = Value::String(version.to_string());
    let last_updated = Value::String(format_instant(last_updated_ms));
    match map.get_mut("meta") {
        Some(Value::Object(meta)) => {
            meta.insert("versionId".into(), version_id);
            meta.insert("lastUpdated".into(), last_updated);
        }
        _ => {
            let mut meta = Map::new();
            meta.insert("versionId".into(), version_id);
            meta.insert("lastUpdated".into(), last_updated);
            let at = map
                .keys()
                .position(|k| k == "id")
                .map_or(map.len(), |i| i + 1);
            map.shift_insert(at, "meta".into(), Value::Object(meta));
        }
    }
    let index = search::extract(ty, resource);
    // Serialize into a reused buffer, then copy into an allocation of the exact size: no
    // growth reallocations and no slack capacity kept for the life of the version.
    thread_local! {
        static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let body = BUFFER.with_borrow_mut(|buffer| {
        buffer.clear();
        serde_json::to_writer(&mut *buffer, resource)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let body = Bytes::copy_from_slice(buffer);
        if buffer.capacity() > 1 << 20 {
            *buffer = Vec::new();
        }
        Ok::<_, StoreError>(body)
    })?;
    Ok(Prepared { body, index })
}

/// The supported type and valid id of a resource to load.
fn loadable(resource: &Value) -> Option<(&'static TypeInfo, String)> {
    let ty = search::type_info(resource.get("resourceType")?.as_str()?)?;
    let id = resource
        .get("id")?
        .as_str()
        .filter(|id| portico_fhir::reference::is_valid_id(id))?;
    Some((ty, id.to_owned()))
}

fn type_of(name: &str) -> Result<&'static TypeInfo, StoreError> {
    search::type_info(name).ok_or_else(|| StoreError::UnknownType(name.to_owned()))
}

impl Store {
    /// An empty store with a table for every supported type.
    pub fn new() -> Store {
        let tables = search::types().iter().map(|_| Table::default()).collect();
        Store {
            inner: RwLock::new(Inner {
                tables,
                atoms: Interner::default(),
            }),
        }
    }

    /// Stores a generated resource (bulk load at start-up). It must carry `resourceType`
    /// and `id`; `meta.versionId` becomes "1" (or the next version if the id exists) and
    /// `meta.lastUpdated` now. The serialization and index extraction happen outside the
    /// lock.
    pub fn insert_loaded(&self, mut resource: Value) -> Result<(), StoreError> {
        // Checked first for the more precise error.
        resource
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::Invalid("missing resourceType".into()))
            .and_then(type_of)?;
        let (ty, id) = loadable(&resource)
            .ok_or_else(|| StoreError::Invalid("missing or invalid id".into()))?;
        let now = now_ms();
        let prepared = prepare(ty, &id, 1, now, &mut resource)?;
        let mut inner = self.inner.write();
        let next = inner.next_version(ty, &id);
        let prepared = if next == 1 {
            prepared
        } else {
            prepare(ty, &id, next, now, &mut resource)?
        };
        let method = if next == 1 {
            Method::Create
        } else {
            Method::Update
        };
        inner.store_version(ty, &id, Some(prepared), now, method);
        Ok(())
    }

    /// The current version of `ty/id`.
    pub fn read(&self, ty: &str, id: &str) -> Result<StoredResource, StoreError> {
        let ty = type_of(ty)?;
        let inner = self.inner.read();
        let slot = inner.slot(ty, id)?;
        let current = inner.export(ty, slot, slot.current());
        if current.body.is_none() {
            return Err(StoreError::Gone {
                resource_type: ty.name.to_owned(),
                id: id.to_owned(),
                version: current.version,
            });
        }
        Ok(current)
    }

    /// Version `version` of `ty/id`.
    pub fn vread(&self, ty: &str, id: &str, version: u32) -> Result<StoredResource, StoreError> {
        let ty = type_of(ty)?;
        let inner = self.inner.read();
        let slot = inner.slot(ty, id)?;
        let Some(found) = slot.versions().find(|v| v.number == version) else {
            return Err(StoreError::NotFound {
                resource_type: ty.name.to_owned(),
                id: format!("{id}/_history/{version}"),
            });
        };
        let found = inner.export(ty, slot, found);
        if found.body.is_none() {
            return Err(StoreError::Gone {
                resource_type: ty.name.to_owned(),
                id: id.to_owned(),
                version,
            });
        }
        Ok(found)
    }

    /// Every version of `ty/id`, newest first (deletions included).
    pub fn history(&self, ty: &str, id: &str) -> Result<Vec<StoredResource>, StoreError> {
        let ty = type_of(ty)?;
        let inner = self.inner.read();
        let slot = inner.slot(ty, id)?;
        Ok(slot
            .versions()
            .rev()
            .map(|v| inner.export(ty, slot, v))
            .collect())
    }

    /// Creates a resource with a server-assigned id. With `condition` (`If-None-Exist`):
    /// no match creates, one match returns it without storing anything, more than one is
    /// [`StoreError::MultipleMatches`]; the check and the write happen under one lock.
    pub fn create(
        &self,
        ty: &str,
        mut resource: Value,
        condition: Option<&SearchQuery>,
    ) -> Result<Created, StoreError> {
        let ty = type_of(ty)?;
        let mut inner = self.inner.write();
        if let Some(query) = condition {
            let matches = inner.matching(ty, &query.criteria);
            match matches.as_slice() {
                [] => {}
                [slot] => {
                    let slot = &inner.tables[ty.index].slots[*slot as usize];
                    return Ok(Created::Existing(inner.export(ty, slot, slot.current())));
                }
                more => return Err(StoreError::MultipleMatches(more.len())),
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let now = now_ms();
        let extra =
            inner.rule_writes(&*inner, ty, None, Some(&resource), now, &mut HashMap::new())?;
        let prepared = prepare(ty, &id, 1, now, &mut resource)?;
        let created = inner.write_version(ty, &id, Some(prepared), now, Method::Create);
        inner.store_rule_writes(extra, now);
        Ok(Created::New(created))
    }

    /// Stores a new version of `ty/id` (creating it with this id if it does not exist or
    /// was deleted). With `if_match`, the current version must be that one. Returns the
    /// stored version and whether it was created.
    pub fn update(
        &self,
        ty: &str,
        id: &str,
        mut resource: Value,
        if_match: Option<u32>,
    ) -> Result<(StoredResource, bool), StoreError> {
        let ty = type_of(ty)?;
        if !portico_fhir::reference::is_valid_id(id) {
            return Err(StoreError::Invalid(format!("'{id}' is not a valid id")));
        }
        let mut inner = self.inner.write();
        let current = inner
            .slot(ty, id)
            .ok()
            .map(|slot| (slot.current().number, slot.is_live()));
        if let Some(expected) = if_match {
            match current {
                Some((number, true)) if number == expected => {}
                Some((number, live)) => {
                    return Err(StoreError::VersionMismatch {
                        expected,
                        current: if live {
                            number.to_string()
                        } else {
                            format!("{number} (deleted)")
                        },
                    });
                }
                None => {
                    return Err(StoreError::VersionMismatch {
                        expected,
                        current: "none (the resource does not exist)".into(),
                    });
                }
            }
        }
        let created = !matches!(current, Some((_, true)));
        let next = current.map_or(1, |(n, _)| n + 1);
        let now = now_ms();
        let old = rules::View::current(&*inner, ty.name, id);
        labels::carry_forward(old.as_ref(), &mut resource);
        let extra = inner.rule_writes(
            &*inner,
            ty,
            old.as_ref(),
            Some(&resource),
            now,
            &mut HashMap::new(),
        )?;
        let prepared = prepare(ty, id, next, now, &mut resource)?;
        let method = if created {
            Method::Create
        } else {
            Method::Update
        };
        let stored = inner.write_version(ty, id, Some(prepared), now, method);
        inner.store_rule_writes(extra, now);
        Ok((stored, created))
    }

    /// Deletes `ty/id` by storing a deletion version. Returns `None` when it was already
    /// deleted (nothing stored). With `if_match`, the current version must be that one.
    pub fn delete(
        &self,
        ty: &str,
        id: &str,
        if_match: Option<u32>,
    ) -> Result<Option<StoredResource>, StoreError> {
        let ty = type_of(ty)?;
        let mut inner = self.inner.write();
        let slot = inner.slot(ty, id)?;
        let (number, live) = (slot.current().number, slot.is_live());
        if let Some(expected) = if_match
            && (expected != number || !live)
        {
            return Err(StoreError::VersionMismatch {
                expected,
                current: number.to_string(),
            });
        }
        if !live {
            return Ok(None);
        }
        let now = now_ms();
        let old = rules::View::current(&*inner, ty.name, id);
        let extra = inner.rule_writes(&*inner, ty, old.as_ref(), None, now, &mut HashMap::new())?;
        let deleted = inner.write_version(ty, id, None, now, Method::Delete);
        inner.store_rule_writes(extra, now);
        Ok(Some(deleted))
    }

    /// Runs a search: the page `[offset, offset + count)` of the matches in order, and the
    /// resources its `_include`/`_revinclude` add.
    pub fn search(&self, query: &SearchQuery) -> SearchResult {
        let inner = self.inner.read();
        let ty = query.ty;
        let mut slots = inner.matching(ty, &query.criteria);
        let total = slots.len();
        if query.summary_count {
            return SearchResult {
                total,
                ..SearchResult::default()
            };
        }
        if !query.sort.is_empty() {
            inner.sort(ty, &mut slots, query);
        }
        let page: Vec<u32> = slots
            .into_iter()
            .skip(query.offset)
            .take(query.count)
            .collect();
        let table = &inner.tables[ty.index];
        let matches = page
            .iter()
            .map(|&s| {
                let slot = &table.slots[s as usize];
                inner.export(ty, slot, slot.current())
            })
            .collect();
        let includes = if query.include.is_empty() && query.revinclude.is_empty() {
            Vec::new()
        } else {
            inner.includes(ty, &page, query)
        };
        SearchResult {
            total,
            matches,
            includes,
        }
    }

    /// How many live (not deleted) resources of `ty` there are.
    pub fn count(&self, ty: &str) -> usize {
        search::type_info(ty).map_or(0, |t| self.inner.read().tables[t.index].live)
    }

    /// How many live resources there are in all.
    pub fn len(&self) -> usize {
        self.inner.read().tables.iter().map(|t| t.live).sum()
    }

    /// Whether the store holds no live resource.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of every live resource of `ty`, in creation order.
    pub fn ids(&self, ty: &str) -> Vec<String> {
        let Some(info) = search::type_info(ty) else {
            return Vec::new();
        };
        let inner = self.inner.read();
        inner.tables[info.index]
            .slots
            .iter()
            .filter(|s| s.is_live())
            .map(|s| s.id.to_string())
            .collect()
    }
}

impl Inner {
    fn slot(&self, ty: &TypeInfo, id: &str) -> Result<&Slot, StoreError> {
        let table = &self.tables[ty.index];
        table
            .by_id
            .get(id)
            .map(|&s| &table.slots[s as usize])
            .ok_or_else(|| StoreError::NotFound {
                resource_type: ty.name.to_owned(),
                id: id.to_owned(),
            })
    }

    fn next_version(&self, ty: &TypeInfo, id: &str) -> u32 {
        self.slot(ty, id).ok().map_or(1, |s| s.current().number + 1)
    }

    /// The version number the next write of `ty/id` in a series of pending writes gets
    /// (`bumps` counts the pending writes per resource), counting this one.
    fn bumped_version(
        &self,
        ty: &'static TypeInfo,
        id: &str,
        bumps: &mut HashMap<(&'static str, String), u32>,
    ) -> u32 {
        let pending = bumps.entry((ty.name, id.to_owned())).or_insert(0);
        *pending += 1;
        self.next_version(ty, id) + *pending - 1
    }

    /// Runs the business rules for a write of `ty` from `old` to `new` against `view`,
    /// and prepares the writes they add (nothing is stored here).
    fn rule_writes(
        &self,
        view: &dyn rules::View,
        ty: &'static TypeInfo,
        old: Option<&Value>,
        new: Option<&Value>,
        now: i64,
        bumps: &mut HashMap<(&'static str, String), u32>,
    ) -> Result<Vec<RuleWrite>, StoreError> {
        let writes = rules::apply(view, ty.name, old, new)?;
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            let ty = type_of(w.resource_type)?;
            let mut resource = w.resource;
            let version = self.bumped_version(ty, &w.id, bumps);
            let prepared = prepare(ty, &w.id, version, now, &mut resource)?;
            out.push(RuleWrite {
                ty,
                id: w.id,
                prepared,
            });
        }
        Ok(out)
    }

    /// Stores the writes [`Inner::rule_writes`] prepared.
    fn store_rule_writes(&mut self, writes: Vec<RuleWrite>, now: i64) {
        for w in writes {
            self.store_version(w.ty, &w.id, Some(w.prepared), now, Method::Update);
        }
    }

    fn export(&self, ty: &'static TypeInfo, slot: &Slot, v: &Version) -> StoredResource {
        StoredResource {
            resource_type: ty.name,
            id: slot.id.to_string(),
            version: v.number,
            last_updated_ms: v.last_updated_ms,
            method: v.method,
            body: v.body.clone(),
        }
    }

    /// [`Inner::store_version`], returning the stored version.
    fn write_version(
        &mut self,
        ty: &'static TypeInfo,
        id: &str,
        prepared: Option<Prepared>,
        last_updated_ms: i64,
        method: Method,
    ) -> StoredResource {
        let slot_no = self.store_version(ty, id, prepared, last_updated_ms, method);
        let slot = &self.tables[ty.index].slots[slot_no as usize];
        self.export(ty, slot, slot.current())
    }

    /// Appends a version (a deletion when `prepared` is `None`), re-indexes the slot and
    /// returns its number.
    fn store_version(
        &mut self,
        ty: &'static TypeInfo,
        id: &str,
        prepared: Option<Prepared>,
        last_updated_ms: i64,
        method: Method,
    ) -> u32 {
        let Inner { tables, atoms } = self;
        let table = &mut tables[ty.index];
        let existing = table.by_id.get(id).copied();
        let slot_no = existing.unwrap_or(table.slots.len() as u32);
        let was_live = existing.is_some_and(|s| table.slots[s as usize].is_live());
        // Drop the old index from the inverted lists.
        let old = match existing {
            Some(s) => std::mem::take(&mut table.slots[s as usize].index),
            None => Box::default(),
        };
        for key in old.iter().filter_map(|e| e.inverted_key(ty)) {
            if let Some(list) = table.inverted.get_mut(&key) {
                if let Ok(pos) = list.binary_search(&slot_no) {
                    list.remove(pos);
                }
                if list.is_empty() {
                    table.inverted.remove(&key);
                }
            }
        }
        let (body, new_index) = match prepared {
            Some(p) => {
                let index: Box<[Entry]> = p
                    .index
                    .into_iter()
                    .map(|(field, value)| match value {
                        Extracted::Ref(target) => Entry::Ref {
                            field,
                            atom: atoms.intern(&target),
                        },
                        Extracted::Token(system, code) => Entry::Token {
                            field,
                            system: system.map_or(NO_SYSTEM, |s| atoms.intern(&s)),
                            code: atoms.intern(&code),
                        },
                        Extracted::Date(start, end) => Entry::Date { field, start, end },
                        Extracted::Str(value) => Entry::Str {
                            field,
                            value: value.into_boxed_str(),
                        },
                    })
                    .collect();
                (Some(p.body), index)
            }
            None => (None, Box::default()),
        };
        for key in new_index.iter().filter_map(|e| e.inverted_key(ty)) {
            let list = table.inverted.entry(key).or_default();
            if let Err(pos) = list.binary_search(&slot_no) {
                list.insert(pos, slot_no);
            }
        }
        let is_live = body.is_some();
        let number = existing.map_or(1, |s| table.slots[s as usize].current().number + 1);
        let version = Version {
            number,
            method,
            last_updated_ms,
            body,
        };
        match existing {
            Some(s) => {
                let slot = &mut table.slots[s as usize];
                let previous = std::mem::replace(&mut slot.current, version);
                slot.older.push(previous);
                slot.index = new_index;
            }
            None => {
                let id: Arc<str> = Arc::from(id);
                table.slots.push(Slot {
                    id: id.clone(),
                    current: version,
                    older: Vec::new(),
                    index: new_index,
                });
                table.by_id.insert(id, slot_no);
            }
        }
        match (was_live, is_live) {
            (false, true) => table.live += 1,
            (true, false) => table.live -= 1,
            _ => {}
        }
        slot_no
    }
}

/// `meta.lastUpdated` formatting, shared with Bundle assembly.
pub fn instant(ms: i64) -> String {
    format_instant(ms)
}

#[cfg(test)]
mod tests;
