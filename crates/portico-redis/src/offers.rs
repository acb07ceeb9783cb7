//! [`RedisOffers`]: what `$find` offered each patient, shared by replicas.
//!
//! Layout: one string per offer at `{prefix}offer:{name(patient, type, id)}`, holding
//! the offered resource as sealed JSON (offers are patient data), expiring after the
//! offer lifetime. An offer that no longer opens (another encryption key) counts as
//! not made: the patient searches again.

use std::time::Duration;

use portico_portal::StateError;
use portico_portal::offers::{Offer, Offers};
use serde_json::Value;

use crate::{Redis, RedisError, millis};

/// Offers in Redis.
#[derive(Debug, Clone)]
pub struct RedisOffers {
    redis: Redis,
    lifetime: Duration,
}

impl RedisOffers {
    pub fn new(redis: Redis, lifetime: Duration) -> RedisOffers {
        RedisOffers { redis, lifetime }
    }

    fn key(&self, patient: &str, resource_type: &str, id: &str) -> String {
        self.redis.key(
            "offer",
            &self.redis.sealer().name(&[patient, resource_type, id]),
        )
    }
}

#[async_trait::async_trait]
impl Offers for RedisOffers {
    async fn put(&self, patient: &str, offers: &[Offer]) -> Result<(), StateError> {
        if offers.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for offer in offers {
            let key = self.key(patient, &offer.resource_type, &offer.id);
            let sealed = self.redis.sealer().seal_json(&key, &offer.resource);
            pipeline
                .cmd("SET")
                .arg(&key)
                .arg(sealed)
                .arg("PX")
                .arg(millis(self.lifetime))
                .ignore();
        }
        self.redis.query_pipeline::<()>(&pipeline).await?;
        Ok(())
    }

    async fn get(
        &self,
        patient: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Value>, StateError> {
        let key = self.key(patient, resource_type, id);
        let sealed: Option<Vec<u8>> = self.redis.query(redis::cmd("GET").arg(&key)).await?;
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        match self.redis.sealer().open_json(&key, &sealed) {
            Ok(value) => Ok(Some(value)),
            Err(RedisError::Unreadable) => {
                tracing::warn!("an offer in Redis cannot be read; treated as not made");
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}
