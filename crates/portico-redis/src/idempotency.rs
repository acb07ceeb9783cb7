//! [`RedisIdempotencyStore`]: idempotency records shared by replicas.
//!
//! Layout: one string per (scope, key) at `{prefix}idem:{name(scope, key)}`, holding a
//! sealed JSON record `{"fingerprint", "owner"}` while running (expiring after the
//! running TTL, so that a replica that died mid-action frees the key) and
//! `{"fingerprint", "response"}` once final (expiring after the store's TTL). The
//! sealed bytes of the running record are the owner's [`Claim`]: `complete` and
//! `abandon` act only while the key still holds exactly those bytes (compared in a Lua
//! script, atomically).

use std::time::Duration;

use portico_portal::StateError;
use portico_portal::idempotency::{Begin, Claim, IdempotencyStore, StoredResponse};
use redis::Script;
use serde::{Deserialize, Serialize};

use crate::{Redis, RedisError, millis, random_hex};

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<StoredResponse>,
}

/// `KEYS[1]` holds exactly `ARGV[1]`: replace it with `ARGV[2]` for `ARGV[3]` ms.
const COMPLETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// `KEYS[1]` holds exactly `ARGV[1]`: delete it.
pub(crate) const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Idempotency records in Redis.
#[derive(Debug, Clone)]
pub struct RedisIdempotencyStore {
    redis: Redis,
    ttl: Duration,
    running_ttl: Duration,
    complete: std::sync::Arc<Script>,
    abandon: std::sync::Arc<Script>,
}

impl RedisIdempotencyStore {
    /// Final answers kept for `ttl`; running records for `running_ttl` (the portal's
    /// deadline plus a margin: past it the owner is gone).
    pub fn new(redis: Redis, ttl: Duration, running_ttl: Duration) -> RedisIdempotencyStore {
        RedisIdempotencyStore {
            redis,
            ttl,
            running_ttl,
            complete: std::sync::Arc::new(Script::new(COMPLETE)),
            abandon: std::sync::Arc::new(Script::new(COMPARE_AND_DELETE)),
        }
    }

    fn key(&self, scope: &str, key: &str) -> String {
        self.redis
            .key("idem", &self.redis.sealer().name(&[scope, key]))
    }
}

#[async_trait::async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    async fn begin(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Begin, StateError> {
        let redis_key = self.key(scope, key);
        let running = self.redis.sealer().seal_json(
            &redis_key,
            &Record {
                fingerprint: fingerprint.to_owned(),
                owner: Some(random_hex(16)),
                response: None,
            },
        );
        // `SET … NX GET`: sets the running record if the key is free and answers nil,
        // or leaves the key alone and answers what it holds, in one atomic step.
        let existing: Option<Vec<u8>> = self
            .redis
            .query(
                redis::cmd("SET")
                    .arg(&redis_key)
                    .arg(&running)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(self.running_ttl))
                    .arg("GET"),
            )
            .await?;
        let Some(existing) = existing else {
            return Ok(Begin::Started(Claim::from_bytes(running)));
        };
        // An unreadable record (another encryption key) cannot be replayed or
        // compared: refusing is the only safe answer until it expires.
        let record: Record = self
            .redis
            .sealer()
            .open_json(&redis_key, &existing)
            .map_err(|e: RedisError| StateError::Unavailable(e.to_string()))?;
        Ok(if record.fingerprint != fingerprint {
            Begin::Mismatch
        } else if let Some(response) = record.response {
            Begin::Replay(response)
        } else {
            Begin::InProgress
        })
    }

    async fn complete(
        &self,
        scope: &str,
        key: &str,
        claim: &Claim,
        response: StoredResponse,
    ) -> Result<(), StateError> {
        let redis_key = self.key(scope, key);
        // The fingerprint is the running record's: read it from the claim. A claim
        // that is no running record of this key holds nothing here.
        let Ok(running) = self
            .redis
            .sealer()
            .open_json::<Record>(&redis_key, claim.as_bytes())
        else {
            return Ok(());
        };
        let done = self.redis.sealer().seal_json(
            &redis_key,
            &Record {
                fingerprint: running.fingerprint,
                owner: None,
                response: Some(response),
            },
        );
        let replaced: i64 = self
            .redis
            .invoke(
                self.complete
                    .key(&redis_key)
                    .arg(claim.as_bytes())
                    .arg(done)
                    .arg(millis(self.ttl)),
            )
            .await?;
        if replaced == 0 {
            tracing::warn!("an idempotency record expired before its answer was stored");
        }
        Ok(())
    }

    async fn abandon(&self, scope: &str, key: &str, claim: &Claim) -> Result<(), StateError> {
        let redis_key = self.key(scope, key);
        let _: i64 = self
            .redis
            .invoke(self.abandon.key(&redis_key).arg(claim.as_bytes()))
            .await?;
        Ok(())
    }
}
