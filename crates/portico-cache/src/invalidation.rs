//! Invalidation by generation counters.
//!
//! A global clock counts invalidations. Every entry records the clock's value when its
//! upstream fetch *started*. An invalidation takes a new clock value and stamps it on
//! each (scope, topic) it covers — a scope is one patient or the shared reference data,
//! a topic is one resource type, "anything" (entries that depend on any type) or
//! "everything" (all topics). An entry is valid only while no stamp on the scopes and
//! topics it depends on is newer than its own. So an invalidation is O(types × patients),
//! completes before the write's response returns, and also defeats the classic race
//! where a read that started before a write finishes after it and would otherwise store
//! the pre-write answer.
//!
//! Which scopes an entry depends on: the shared scope always, plus each patient in its
//! partition. Which a write invalidates: each patient in its partition (the shared scope
//! when it has none), plus the shared scope for shared reference types, since for
//! instance a booking changes a `Slot` that every patient sees.
//!
//! Stamps are dropped once they are older than any entry can be of use (largest TTL plus
//! the stale bound, measured from fetch start), so the table stays small.
//!
//! **Across replicas** ([`SharedGenerations`], Redis in the gateway): the clock and the
//! stamps live in the shared store instead of this process. A cacheable read asks it for
//! the clock and the newest stamp among the read's (scope, topic) keys ([`read_keys`]);
//! a write stamps its keys ([`write_keys`]) before its response returns. So a write on
//! one replica is seen by the next read on any other: read your writes across the fleet.
//! (The Redis implementation answers most reads from a mirror the writes are pushed to,
//! and a write waits for every mirror; see `portico_redis`.) The store keeps a *floor*
//! below which no entry is valid (the clock's first value, taken from the store's time
//! when the clock is created), so a store that lost its data (restarted without
//! persistence) invalidates every entry instead of forgetting the stamps. Keys name
//! patients only by a hash.
//!
//! Which types a write invalidates ([`invalidated_types`]):
//!
//! | write of | invalidates |
//! |---|---|
//! | `Appointment` | `Appointment`, `AppointmentResponse`, `Slot` |
//! | `AppointmentResponse` | `AppointmentResponse`, `Appointment`, `Slot` |
//! | `Task` | `Task`, `MedicationRequest`, `ServiceRequest`, `CommunicationRequest` |
//! | `MedicationRequest` | `MedicationRequest`, `Task` |
//! | `ServiceRequest` | `ServiceRequest`, `Task` |
//! | `Communication` | `Communication`, `CommunicationRequest` |
//! | `CommunicationRequest` | `CommunicationRequest`, `Communication`, `Task` |
//! | `PaymentNotice`, `PaymentReconciliation` | itself, `Invoice`, `Account` |
//! | `Invoice` | `Invoice`, `Account` |
//! | `Account` | `Account`, `Invoice` |
//! | anything else | itself |
//!
//! and every write also invalidates the "anything" topic of its scopes (searches with
//! includes the gateway cannot place, `_revinclude`, chains or `_has`, and paging
//! links). A search whose only widening is `_include` of a parameter with known target
//! types (`Appointment:actor`, `MedicationRequest:medication`, ...; see `key.rs`)
//! depends on its own type and those targets only, so a message sent does not throw
//! away the patient's appointment list.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use portico_upstream::CachePartition;
use tokio::time::Instant;

use crate::config::is_shared_type;
use crate::key::Deps;

/// The types a write of `resource_type` invalidates (the table in the module docs).
pub fn invalidated_types(resource_type: &str) -> Vec<&str> {
    let related: &[&str] = match resource_type {
        "Appointment" => &["AppointmentResponse", "Slot"],
        "AppointmentResponse" => &["Appointment", "Slot"],
        "Task" => &[
            "MedicationRequest",
            "ServiceRequest",
            "CommunicationRequest",
        ],
        "MedicationRequest" | "ServiceRequest" => &["Task"],
        "Communication" => &["CommunicationRequest"],
        "CommunicationRequest" => &["Communication", "Task"],
        "PaymentNotice" | "PaymentReconciliation" => &["Invoice", "Account"],
        "Invoice" => &["Account"],
        "Account" => &["Invoice"],
        _ => &[],
    };
    std::iter::once(resource_type)
        .chain(related.iter().copied())
        .collect()
}

/// Generation stamps shared by every replica; see the module docs.
#[async_trait::async_trait]
pub trait SharedGenerations: Send + Sync + std::fmt::Debug {
    /// The clock now, and the newest of the floor and the stamps on `keys` (names from
    /// [`read_keys`]): as of this call, every stamp a `stamp` that returned has written.
    async fn snapshot(&self, keys: &[String]) -> Result<Snapshot, SharedError>;
    /// Takes a new clock value and stamps it on each of `keys` (names from
    /// [`write_keys`] and the other invalidations), before it returns.
    async fn stamp(&self, keys: &[String]) -> Result<(), SharedError>;
    /// This replica is shutting down: it stops answering reads from anything the store
    /// pushed to it, and writes on other replicas stop waiting for it.
    async fn leave(&self) {}
    /// Whether this replica answers reads' checks from its own copy of the stamps now
    /// (no round trip to the store).
    fn mirrored(&self) -> bool {
        false
    }
}

/// The shared clock and the newest stamp a read must not be older than.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub clock: u64,
    pub newest: u64,
}

/// The shared store did not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("shared cache generations unavailable: {0}")]
pub struct SharedError(pub String);

/// The (scope, topic) names a read with these dependencies must check, in the shared
/// store's form: `all`, and for the shared scope and each patient of the partition the
/// read's topics and `*` ("everything").
pub(crate) fn read_keys(partition: Option<&CachePartition>, deps: &Deps) -> Vec<String> {
    let stamps = read_stamps(partition, deps);
    let mut keys = Vec::with_capacity(stamps.len() + 1);
    keys.push(ALL.to_owned());
    // Stamps come grouped by scope: a patient's digest is computed once per read.
    let mut scope_names: Vec<(&Scope, String)> = Vec::new();
    for (scope, topic) in &stamps {
        let name = match scope_names.iter().find(|(s, _)| *s == scope) {
            Some((_, name)) => name,
            None => {
                scope_names.push((scope, scope_name(scope)));
                &scope_names[scope_names.len() - 1].1
            }
        };
        keys.push(topic_name(name, topic));
    }
    keys
}

/// The names a write of `resource_type` by `partition` stamps.
pub fn write_keys(partition: Option<&CachePartition>, resource_type: &str) -> Vec<String> {
    let patients = partition.map_or(&[][..], CachePartition::patients);
    names(type_stamps(patients, &invalidated_types(resource_type)))
}

/// The name stamped by invalidating everything.
pub const ALL: &str = "all";

fn names(stamps: Vec<(Scope, Topic)>) -> Vec<String> {
    stamps.iter().map(|(s, t)| key_name(s, t)).collect()
}

/// `s|…` for the shared scope, `p<hash>|…` for a patient (ids never appear in the
/// store), then `t:<type>`, `any` or `*`.
fn key_name(scope: &Scope, topic: &Topic) -> String {
    topic_name(&scope_name(scope), topic)
}

/// `s`, or `p` and the first 12 bytes of the patient id's SHA-256 in hex.
fn scope_name(scope: &Scope) -> String {
    use sha2::Digest as _;
    use std::fmt::Write as _;
    match scope {
        Scope::Shared => "s".to_owned(),
        Scope::Patient(id) => {
            let digest = sha2::Sha256::digest(id.as_bytes());
            let mut name = String::with_capacity(25);
            name.push('p');
            for b in &digest[..12] {
                let _ = write!(name, "{b:02x}");
            }
            name
        }
    }
}

fn topic_name(scope: &str, topic: &Topic) -> String {
    match topic {
        Topic::Type(t) => format!("{scope}|t:{t}"),
        Topic::Anything => format!("{scope}|any"),
        Topic::Everything => format!("{scope}|*"),
    }
}

/// The (scope, topic) stamps a read with these dependencies must not be older than.
fn read_stamps(partition: Option<&CachePartition>, deps: &Deps) -> Vec<(Scope, Topic)> {
    let topics: Vec<Topic> = match deps {
        Deps::Type(t) => vec![Topic::Type(t.clone())],
        Deps::Types(types) => types.iter().cloned().map(Topic::Type).collect(),
        Deps::Any => vec![Topic::Anything],
    };
    let patients = partition.map_or(&[][..], CachePartition::patients);
    let mut out = Vec::new();
    for scope in std::iter::once(Scope::Shared).chain(patients.iter().cloned().map(Scope::Patient))
    {
        for topic in topics.iter().chain([&Topic::Everything]) {
            out.push((scope.clone(), topic.clone()));
        }
    }
    out
}

/// The stamps of invalidating `types` and "anything" for each patient (the shared
/// scope when there are none), and in the shared scope for shared reference types.
fn type_stamps(patients: &[String], types: &[&str]) -> Vec<(Scope, Topic)> {
    let mut scopes: Vec<Scope> = patients.iter().cloned().map(Scope::Patient).collect();
    if scopes.is_empty() || types.iter().any(|t| is_shared_type(t)) {
        scopes.push(Scope::Shared);
    }
    let mut keys = Vec::new();
    for scope in &scopes {
        for t in types {
            if *scope != Scope::Shared || patients.is_empty() || is_shared_type(t) {
                keys.push((scope.clone(), Topic::Type((*t).to_owned())));
            }
        }
        keys.push((scope.clone(), Topic::Anything));
    }
    keys
}

/// The stamps of invalidating one patient's `types` (all when empty).
fn patient_stamps(patient: &str, types: &[&str]) -> Vec<(Scope, Topic)> {
    if types.is_empty() {
        vec![(Scope::Patient(patient.to_owned()), Topic::Everything)]
    } else {
        type_stamps(&[patient.to_owned()], types)
    }
}

/// The names stamped by invalidating one patient's `types` (all when empty).
pub fn patient_keys(patient: &str, types: &[&str]) -> Vec<String> {
    names(patient_stamps(patient, types))
}

/// The names stamped by invalidating `types` (all when empty) for everyone.
pub fn shared_keys(types: &[&str]) -> Vec<String> {
    names(topics(types).map(|topic| (Scope::Shared, topic)).collect())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Scope {
    Shared,
    Patient(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Topic {
    Type(String),
    Anything,
    Everything,
}

#[derive(Debug)]
struct Stamp {
    generation: u64,
    at: Instant,
}

/// The generation table.
#[derive(Debug)]
pub(crate) struct Generations {
    clock: AtomicU64,
    /// Stamped by `invalidate_all`.
    all: AtomicU64,
    stamps: RwLock<HashMap<(Scope, Topic), Stamp>>,
    /// Prune when the table grows past this.
    prune_at: AtomicU64,
    retention: Duration,
}

const MIN_PRUNE_AT: u64 = 1024;

impl Generations {
    /// `retention`: how long a stamp must be kept (the longest an entry is of use).
    pub(crate) fn new(retention: Duration) -> Generations {
        Generations {
            clock: AtomicU64::new(1),
            all: AtomicU64::new(0),
            stamps: RwLock::new(HashMap::new()),
            prune_at: AtomicU64::new(MIN_PRUNE_AT),
            retention: retention.saturating_add(Duration::from_secs(1)),
        }
    }

    /// The clock now: recorded by a fetch when it starts.
    pub(crate) fn now(&self) -> u64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// The newest stamp an entry with these dependencies must not be older than.
    pub(crate) fn required(&self, partition: Option<&CachePartition>, deps: &Deps) -> u64 {
        let stamps = self.stamps.read();
        read_stamps(partition, deps)
            .iter()
            .filter_map(|key| stamps.get(key))
            .map(|stamp| stamp.generation)
            .fold(self.all.load(Ordering::SeqCst), u64::max)
    }

    /// Invalidates the entries a write of `resource_type` changes for `partition`.
    pub(crate) fn invalidate_write(&self, partition: Option<&CachePartition>, resource_type: &str) {
        let patients = partition.map_or(&[][..], CachePartition::patients);
        self.stamp(type_stamps(patients, &invalidated_types(resource_type)));
    }

    /// Invalidates `types` (all types when empty) of one patient, in every partition
    /// that names the patient; shared types among `types` are invalidated for everyone.
    pub(crate) fn invalidate_patient(&self, patient: &str, types: &[&str]) {
        self.stamp(patient_stamps(patient, types));
    }

    /// Invalidates `types` (all types when empty) in the shared scope, which every
    /// entry depends on.
    pub(crate) fn invalidate_shared(&self, types: &[&str]) {
        self.stamp(topics(types).map(|topic| (Scope::Shared, topic)).collect());
    }

    /// Invalidates every entry.
    pub(crate) fn invalidate_all(&self) {
        let generation = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        self.all.fetch_max(generation, Ordering::SeqCst);
    }

    fn stamp(&self, keys: Vec<(Scope, Topic)>) {
        let generation = self.clock.fetch_add(1, Ordering::SeqCst) + 1;
        let at = Instant::now();
        let mut stamps = self.stamps.write();
        for key in keys {
            stamps.insert(key, Stamp { generation, at });
        }
        let len = u64::try_from(stamps.len()).unwrap_or(u64::MAX);
        if len > self.prune_at.load(Ordering::Relaxed) {
            stamps.retain(|_, stamp| at.saturating_duration_since(stamp.at) <= self.retention);
            let len = u64::try_from(stamps.len()).unwrap_or(u64::MAX);
            self.prune_at
                .store(len.saturating_mul(2).max(MIN_PRUNE_AT), Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.stamps.read().len()
    }
}

fn topics<'a>(types: &'a [&'a str]) -> Box<dyn Iterator<Item = Topic> + 'a> {
    if types.is_empty() {
        Box::new(std::iter::once(Topic::Everything))
    } else {
        Box::new(
            types
                .iter()
                .map(|t| Topic::Type((*t).to_owned()))
                .chain([Topic::Anything]),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(t: &str) -> Deps {
        Deps::Type(t.to_owned())
    }

    #[test]
    fn table() {
        assert_eq!(
            invalidated_types("Appointment"),
            ["Appointment", "AppointmentResponse", "Slot"]
        );
        assert_eq!(
            invalidated_types("Task"),
            [
                "Task",
                "MedicationRequest",
                "ServiceRequest",
                "CommunicationRequest"
            ]
        );
        assert_eq!(invalidated_types("Observation"), ["Observation"]);
    }

    #[tokio::test]
    async fn writes_stamp_the_writers_patients_and_shared_types() {
        let g = Generations::new(Duration::from_secs(60));
        let a = CachePartition::new(["a"], "fp");
        let ab = CachePartition::new(["a", "b"], "proxy");
        let b = CachePartition::new(["b"], "fp");
        let before = g.now();
        g.invalidate_write(Some(&a), "Appointment");
        // A's appointments, in every partition that names A.
        assert!(g.required(Some(&a), &ty("Appointment")) > before);
        assert!(g.required(Some(&ab), &ty("Appointment")) > before);
        // B's untouched; but Slots are shared, so everyone's Slot entries go.
        assert!(g.required(Some(&b), &ty("Appointment")) <= before);
        assert!(g.required(Some(&b), &ty("Slot")) > before);
        assert!(g.required(None, &ty("Slot")) > before);
        assert!(g.required(None, &ty("Practitioner")) <= before);
        assert!(g.required(Some(&a), &Deps::Any) > before);
        assert!(g.required(Some(&b), &ty("Observation")) <= before);

        let before = g.now();
        g.invalidate_patient("b", &[]);
        assert!(g.required(Some(&b), &ty("Observation")) > before);
        assert!(g.required(Some(&a), &ty("Observation")) <= before);
        let before = g.now();
        g.invalidate_all();
        assert!(g.required(Some(&a), &ty("Observation")) > before);
    }

    #[tokio::test(start_paused = true)]
    async fn old_stamps_are_pruned() {
        let g = Generations::new(Duration::from_secs(10));
        for i in 0..MIN_PRUNE_AT {
            g.invalidate_patient(&format!("p{i}"), &["Observation"]);
        }
        assert!(g.len() > 1024);
        assert_eq!(g.len(), 2048);
        tokio::time::advance(Duration::from_secs(12)).await;
        // Pruning is amortized: it runs once the table has doubled since the last one.
        for i in 0..600 {
            g.invalidate_patient(&format!("late{i}"), &["Observation"]);
        }
        assert_eq!(g.len(), 1200, "only the recent stamps remain");
    }
}
