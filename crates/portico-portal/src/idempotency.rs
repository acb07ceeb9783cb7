//! Exactly-once writes from the patient's point of view.
//!
//! Two layers, as DESIGN.md decides:
//! 1. **In the gateway** ([`IdempotencyStore`]): a write with an `Idempotency-Key`
//!    header is remembered per patient. The same key with the same body replays the
//!    first answer; the same key with another body is refused (422); a second request
//!    while the first is still running is refused (409). Only answers that are final are
//!    remembered: a failure that left nothing done upstream is forgotten, so that the
//!    client may retry with the same key.
//! 2. **Upstream** ([`Idem`]): the key becomes a business identifier on what is created
//!    (`urn:ietf:rfc:3986` | `urn:uuid:<v5 of patient, action, key>`), sent with
//!    `If-None-Exist`, so that a retry after a lost answer (or a second replica) cannot
//!    create a duplicate, and a create whose outcome is unknown can be found again.
//!
//! The store is a trait so that a Redis implementation (`portico-redis`) can share
//! records between replicas without touching the handlers; [`MemoryIdempotencyStore`]
//! is the single-node default (moka, time-bounded). Both pass one contract suite
//! (`crate::contract::idempotency`). A started key is held by a [`Claim`]: a running
//! record whose owner died expires after a bounded time, and only its owner completes
//! or abandons it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use portico_guard::IfNoneExist;

use crate::error::StateError;

/// The identifier system of the business identifiers Portico puts on what it creates.
pub const IDENTIFIER_SYSTEM: &str = "urn:ietf:rfc:3986";

/// The UUID namespace of Portico's business identifiers.
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_3b8e_2d4a_4c19_9b7e_5a0d_1e2f_3c4d);

/// The longest `Idempotency-Key` accepted, in bytes.
pub const MAX_KEY_LEN: usize = 255;

/// The idempotency identity of one write action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idem {
    value: String,
}

impl Idem {
    /// The identity of `action` by `patient` under the client's key (or a fresh random
    /// one when the client sent none: the write is then still protected against upstream
    /// retries, just not against the client's).
    pub fn new(patient: &str, action: &str, key: Option<&str>) -> Idem {
        let key = key.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
        let name = format!("{patient}\n{action}\n{key}");
        Idem {
            value: format!("urn:uuid:{}", Uuid::new_v5(&NAMESPACE, name.as_bytes())),
        }
    }

    /// A derived identity for one step of a multi-step action (`book`, `cancel` of a
    /// reschedule).
    pub fn step(&self, step: &str) -> Idem {
        let name = format!("{}\n{step}", self.value);
        Idem {
            value: format!("urn:uuid:{}", Uuid::new_v5(&NAMESPACE, name.as_bytes())),
        }
    }

    /// The identifier value (`urn:uuid:…`).
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The token search value: `system|value`.
    pub fn token(&self) -> String {
        format!("{IDENTIFIER_SYSTEM}|{}", self.value)
    }

    /// The `If-None-Exist` query: `identifier=system|value`, percent-encoded.
    pub fn search_query(&self) -> String {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("identifier", &self.token())
            .finish()
    }

    /// The condition of a create made under this identity (`If-None-Exist` on the
    /// business identifier).
    pub fn condition(&self) -> IfNoneExist {
        IfNoneExist::Identifier(self.search_query())
    }
}

/// Adds the business identifier of `idem` to a body (keeping any identifiers it has).
pub fn with_identifier(mut body: Value, idem: &Idem) -> Value {
    if let Some(obj) = body.as_object_mut() {
        let identifier = serde_json::json!({"system": IDENTIFIER_SYSTEM, "value": idem.value()});
        match obj.get_mut("identifier") {
            Some(Value::Array(list)) => {
                if !list.contains(&identifier) {
                    list.push(identifier);
                }
            }
            _ => {
                obj.insert("identifier".to_owned(), Value::Array(vec![identifier]));
            }
        }
    }
    body
}

/// Checks a client's `Idempotency-Key`: 1–255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// A fingerprint of a write request: the action and its body in canonical form (object
/// keys sorted at every level), so that a retry that serializes the same body with its
/// keys in another order is recognized as the same request.
pub fn fingerprint(action: &str, body: &Value) -> String {
    let mut h = Sha256::new();
    h.update(action.as_bytes());
    h.update([0]);
    h.update(canonical(body).as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => {
            format!(
                "[{}]",
                items.iter().map(canonical).collect::<Vec<_>>().join(",")
            )
        }
        other => other.to_string(),
    }
}

/// A remembered final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Value,
}

/// What [`IdempotencyStore::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// First use of the key (or the running record of an owner that died expired): the
    /// caller runs the action, then calls `complete` or `abandon` with this claim.
    Started(Claim),
    /// The key was used with the same request and finished: replay this.
    Replay(StoredResponse),
    /// The key is being used right now by the same request.
    InProgress,
    /// The key was used with a different request.
    Mismatch,
}

/// Proof that a caller started a key: only the holder of the running record's claim
/// completes or abandons it, so that a record taken over after it expired is never
/// overwritten by its first, slow owner.
#[derive(Clone, PartialEq, Eq)]
pub struct Claim(Arc<[u8]>);

impl Claim {
    /// A claim carried as these bytes (for stores that keep it in their own form).
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> Claim {
        Claim(bytes.into())
    }

    /// A fresh random claim.
    pub fn random() -> Claim {
        Claim::from_bytes(Uuid::new_v4().as_bytes().to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Claim")
    }
}

/// How long a running record outlives the request that started it by default: past
/// this a key whose owner died (a replica that crashed mid-action) can be used again.
/// The gateway sets the portal's deadline plus a margin.
pub const DEFAULT_RUNNING_TTL: Duration = Duration::from_secs(60);

/// Where idempotency records live. `scope` separates principals (a patient's keys
/// never collide with another's).
///
/// A store that cannot answer is an error, and the caller must then not run the
/// action: a write without its key's protection could run twice. Implementations keep
/// a running record for a bounded time (its owner may die), and a final answer for
/// their configured lifetime. `crate::contract::idempotency` is the contract every
/// implementation passes.
#[async_trait::async_trait]
pub trait IdempotencyStore: Send + Sync + std::fmt::Debug {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, StateError>;
    /// Replaces the running record of `claim` with the final answer (nothing happens
    /// when the claim no longer holds the key).
    async fn complete(
        &self,
        scope: &str,
        key: &str,
        claim: &Claim,
        response: StoredResponse,
    ) -> Result<(), StateError>;
    /// Forgets a started key whose action failed without a final answer (nothing
    /// happens when the claim no longer holds the key).
    async fn abandon(&self, scope: &str, key: &str, claim: &Claim) -> Result<(), StateError>;
}

#[derive(Debug, Clone)]
enum State {
    Running { claim: Claim, until: Instant },
    Done(StoredResponse),
}

#[derive(Debug, Clone)]
struct Record {
    fingerprint: String,
    state: State,
}

/// The in-memory store: records expire after `ttl` (24 h by default), running records
/// after the running TTL.
#[derive(Debug, Clone)]
pub struct MemoryIdempotencyStore {
    records: moka::sync::Cache<(String, String), Record>,
    running_ttl: Duration,
}

impl MemoryIdempotencyStore {
    pub fn new(ttl: Duration, max_records: u64) -> MemoryIdempotencyStore {
        MemoryIdempotencyStore {
            records: moka::sync::Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_records)
                .build(),
            running_ttl: DEFAULT_RUNNING_TTL,
        }
    }

    /// How long a running record may stay without being completed or abandoned.
    pub fn with_running_ttl(mut self, running_ttl: Duration) -> MemoryIdempotencyStore {
        self.running_ttl = running_ttl;
        self
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        MemoryIdempotencyStore::new(Duration::from_secs(24 * 3600), 1_000_000)
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, StateError> {
        let now = Instant::now();
        let claim = Claim::random();
        let mut found = None;
        self.records
            .entry((scope.to_owned(), key.to_owned()))
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                Some(Record {
                    state: State::Running { until, .. },
                    ..
                }) if until <= now => Op::Put(Record {
                    fingerprint: fingerprint.to_owned(),
                    state: State::Running {
                        claim: claim.clone(),
                        until: now + self.running_ttl,
                    },
                }),
                Some(record) => {
                    found = Some(record);
                    Op::Nop
                }
                None => Op::Put(Record {
                    fingerprint: fingerprint.to_owned(),
                    state: State::Running {
                        claim: claim.clone(),
                        until: now + self.running_ttl,
                    },
                }),
            });
        Ok(match found {
            None => Begin::Started(claim),
            Some(record) if record.fingerprint != fingerprint => Begin::Mismatch,
            Some(Record {
                state: State::Running { .. },
                ..
            }) => Begin::InProgress,
            Some(Record {
                state: State::Done(r),
                ..
            }) => Begin::Replay(r),
        })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        claim: &Claim,
        response: StoredResponse,
    ) -> Result<(), StateError> {
        self.records
            .entry((scope.to_owned(), key.to_owned()))
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                Some(Record {
                    fingerprint,
                    state: State::Running { claim: held, .. },
                }) if held == *claim => Op::Put(Record {
                    fingerprint,
                    state: State::Done(response),
                }),
                _ => Op::Nop,
            });
        Ok(())
    }

    async fn abandon(&self, scope: &str, key: &str, claim: &Claim) -> Result<(), StateError> {
        self.records
            .entry((scope.to_owned(), key.to_owned()))
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                Some(Record {
                    state: State::Running { claim: held, .. },
                    ..
                }) if held == *claim => Op::Remove,
                _ => Op::Nop,
            });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_added_once() {
        let idem = Idem::new("pat-1", "book", Some("k1"));
        let body = serde_json::json!({"resourceType": "Task"});
        let once = with_identifier(body, &idem);
        let twice = with_identifier(once.clone(), &idem);
        assert_eq!(once, twice);
        assert_eq!(once["identifier"][0]["system"], IDENTIFIER_SYSTEM);
    }

    #[test]
    fn identities_are_per_patient_action_and_key() {
        let a = Idem::new("pat-1", "book", Some("k"));
        assert_eq!(a, Idem::new("pat-1", "book", Some("k")));
        assert_ne!(a, Idem::new("pat-2", "book", Some("k")));
        assert_ne!(a, Idem::new("pat-1", "cancel", Some("k")));
        assert_ne!(a, Idem::new("pat-1", "book", Some("k2")));
        assert_ne!(a.step("book"), a.step("cancel"));
        assert_ne!(Idem::new("p", "a", None), Idem::new("p", "a", None));
        assert!(
            a.search_query()
                .starts_with("identifier=urn%3Aietf%3Arfc%3A3986%7Curn%3Auuid%3A")
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a":1,"b":{"x":[1,2],"y":"z"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"b":{"y":"z","x":[1,2]},"a":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"b":{"y":"z","x":[2,1]},"a":1}"#).unwrap();
        assert_eq!(fingerprint("pay", &a), fingerprint("pay", &b));
        assert_ne!(fingerprint("pay", &a), fingerprint("pay", &c));
        assert_ne!(fingerprint("pay", &a), fingerprint("book", &a));
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(valid_key("abc-123_X"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"x".repeat(256)));
        assert!(!valid_key("é"));
    }

    #[tokio::test]
    async fn store_replays_refuses_mismatch_and_forgets_abandoned() {
        let store = MemoryIdempotencyStore::default();
        let Ok(Begin::Started(p1)) = store.begin("p1", "k", "f1").await else {
            panic!("first use starts")
        };
        assert_eq!(store.begin("p1", "k", "f1").await, Ok(Begin::InProgress));
        assert_eq!(store.begin("p1", "k", "f2").await, Ok(Begin::Mismatch));
        // Another patient's identical key is independent.
        let Ok(Begin::Started(p2)) = store.begin("p2", "k", "f1").await else {
            panic!("another scope starts")
        };
        let answer = StoredResponse {
            status: 201,
            body: serde_json::json!({"id": "a1"}),
        };
        store
            .complete("p1", "k", &p1, answer.clone())
            .await
            .unwrap();
        assert_eq!(
            store.begin("p1", "k", "f1").await,
            Ok(Begin::Replay(answer))
        );
        store.abandon("p2", "k", &p2).await.unwrap();
        assert!(matches!(
            store.begin("p2", "k", "f9").await,
            Ok(Begin::Started(_))
        ));
    }

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        crate::contract::idempotency::run(async |settings| {
            Arc::new(
                MemoryIdempotencyStore::new(settings.ttl, 1000)
                    .with_running_ttl(settings.running_ttl),
            ) as Arc<dyn IdempotencyStore>
        })
        .await;
    }
}
