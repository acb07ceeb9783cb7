//! Cache configuration and the TTL policy.
//!
//! Defaults, chosen for a patient portal in front of an EHR that answers in 100–500 ms:
//!
//! | setting | default | why |
//! |---|---|---|
//! | `patient_ttl` | 60 s | a dashboard reload within a minute costs no EHR call; changes made *through the gateway* are invalidated at once, so the TTL only bounds how late changes made in the EHR itself show |
//! | `reference_ttl` | 10 min | practitioners, locations, organizations, medications, schedules, services change rarely |
//! | `slot_ttl` | 15 s | free slots are taken by other patients booking through other channels |
//! | `stale_if_error` | 5 min | how long past its TTL an entry may still be served, marked stale, while the EHR is failing |
//! | `max_bytes` | 256 MiB | total weight (stored body, compressed or not, + key + overhead) of cached entries; what the gateway derives from entries that are hit (kept answers, verified pages) comes on top, up to 8× the uncompressed body + 16 KiB per entry |
//! | `max_entry_bytes` | 8 MiB | larger responses are passed through uncached rather than evicting everything else |
//! | `compress` | `true` | bodies of at least 512 bytes are stored LZ4-compressed when that saves an eighth (`max_entry_bytes` applies before): FHIR JSON shrinks several-fold, and a hit decompresses in ~1 µs per 10 kB. Covers cached bodies only; the answers the gateway keeps for hit entries are always packed |
//!
//! `ttl_by_type` overrides the TTL of single resource types; `"0s"` stops caching a
//! type. Durations accept `"250ms"`, `"15s"`, `"10m"` or milliseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Resource types whose instances are shared reference data, not anyone's health
/// record. Only these may be cached for requests without a partition (then shared by
/// every principal using the same upstream credential).
pub const SHARED_TYPES: &[&str] = portico_fhir::compartment::REFERENCE_DATA_TYPES;

/// Whether `resource_type` is shared reference data (see [`SHARED_TYPES`]).
pub fn is_shared_type(resource_type: &str) -> bool {
    SHARED_TYPES.contains(&resource_type)
}

/// The read cache's settings (`[cache]` in the gateway's configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// `false` turns the cache into a pass-through (default `true`).
    pub enabled: bool,
    /// Upper bound on the weight of all entries, in bytes (default 256 MiB).
    pub max_bytes: u64,
    /// Responses with larger bodies are not cached (default 8 MiB).
    pub max_entry_bytes: u64,
    /// Store bodies of at least 512 bytes LZ4-compressed when that saves at least an
    /// eighth (default `true`). `max_bytes` then counts compressed bytes.
    pub compress: bool,
    /// TTL of patient data: every type not in [`SHARED_TYPES`] (default 60 s).
    #[serde(deserialize_with = "portico_upstream::duration::deserialize")]
    pub patient_ttl: Duration,
    /// TTL of shared reference data other than `Slot` (default 10 min).
    #[serde(deserialize_with = "portico_upstream::duration::deserialize")]
    pub reference_ttl: Duration,
    /// TTL of `Slot` (default 15 s).
    #[serde(deserialize_with = "portico_upstream::duration::deserialize")]
    pub slot_ttl: Duration,
    /// Per-type TTL overrides; zero disables caching of that type.
    #[serde(deserialize_with = "duration_map")]
    pub ttl_by_type: BTreeMap<String, Duration>,
    /// How long past its TTL an entry may be served, marked stale, when the EHR fails
    /// with a timeout, a connection error, a 5xx, a 429, an open circuit or the
    /// gateway's own upstream concurrency limit (default 5 min; zero disables).
    #[serde(deserialize_with = "portico_upstream::duration::deserialize")]
    pub stale_if_error: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 8 * 1024 * 1024,
            compress: true,
            patient_ttl: Duration::from_secs(60),
            reference_ttl: Duration::from_secs(600),
            slot_ttl: Duration::from_secs(15),
            ttl_by_type: BTreeMap::new(),
            stale_if_error: Duration::from_secs(300),
        }
    }
}

impl CacheConfig {
    /// The TTL for entries about `resource_type`; for an unknown type (a paging link
    /// that does not name one) the smallest TTL configured anywhere, so that an override
    /// of zero also keeps such pages out of the cache.
    pub fn ttl_for(&self, resource_type: Option<&str>) -> Duration {
        match resource_type {
            Some(t) => match self.ttl_by_type.get(t) {
                Some(ttl) => *ttl,
                None if t == "Slot" => self.slot_ttl,
                None if is_shared_type(t) => self.reference_ttl,
                None => self.patient_ttl,
            },
            None => self
                .ttl_by_type
                .values()
                .copied()
                .chain([self.patient_ttl, self.reference_ttl, self.slot_ttl])
                .min()
                .unwrap_or(Duration::ZERO),
        }
    }

    /// The longest time an entry can be of use (TTL plus the stale bound).
    pub fn max_lifetime(&self) -> Duration {
        self.ttl_by_type
            .values()
            .copied()
            .chain([self.patient_ttl, self.reference_ttl, self.slot_ttl])
            .max()
            .unwrap_or(Duration::ZERO)
            .saturating_add(self.stale_if_error)
    }
}

fn duration_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Value(#[serde(deserialize_with = "portico_upstream::duration::deserialize")] Duration);
    let map = BTreeMap::<String, Value>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, Value(v))| (k, v)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_policy_by_type() {
        let mut c = CacheConfig::default();
        assert_eq!(c.ttl_for(Some("Observation")), Duration::from_secs(60));
        assert_eq!(c.ttl_for(Some("Practitioner")), Duration::from_secs(600));
        assert_eq!(c.ttl_for(Some("Slot")), Duration::from_secs(15));
        assert_eq!(c.ttl_for(None), Duration::from_secs(15));
        c.ttl_by_type.insert("Observation".into(), Duration::ZERO);
        assert_eq!(c.ttl_for(Some("Observation")), Duration::ZERO);
        assert_eq!(c.ttl_for(None), Duration::ZERO);
        assert_eq!(c.max_lifetime(), Duration::from_secs(900));
    }

    #[test]
    fn deserializes_with_defaults_and_duration_strings() {
        let c: CacheConfig = serde_json::from_str(
            r#"{"patient_ttl": "30s", "ttl_by_type": {"Condition": "2m", "Slot": 5000}}"#,
        )
        .unwrap();
        assert_eq!(c.patient_ttl, Duration::from_secs(30));
        assert_eq!(c.ttl_by_type["Condition"], Duration::from_secs(120));
        assert_eq!(c.ttl_by_type["Slot"], Duration::from_secs(5));
        assert_eq!(c.max_bytes, 256 * 1024 * 1024);
        assert!(c.compress);
        assert!(serde_json::from_str::<CacheConfig>(r#"{"patient_tl": "30s"}"#).is_err());
        assert!(serde_json::from_str::<CacheConfig>(r#"{"slot_ttl": "soon"}"#).is_err());
    }
}
