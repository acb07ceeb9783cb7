//! What an operation offered a patient: the proposed Appointments of a `$find`, kept for
//! [`OFFER_LIFETIME`] so that a later `$book` can check the appointment was offered to
//! *this* patient by *this* gateway (a proposed appointment need not be searchable).
//!
//! [`Offers`] has two implementations proven by one contract suite
//! (`crate::contract::offers`): [`MemoryOffers`] (moka, single node) and a Redis one
//! (`portico-redis`, encrypted: offers are patient data), so that a `$find` answered by
//! one replica can be booked through another.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::StateError;

/// How long an offer made by an operation (a proposed appointment from `$find`) may be
/// acted on through this gateway.
pub const OFFER_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// One offer: the resource's type, id, and the resource as offered.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub resource_type: String,
    pub id: String,
    pub resource: Value,
}

/// Where offers live, per patient, each for the store's lifetime (normally
/// [`OFFER_LIFETIME`]) from when it was made.
#[async_trait::async_trait]
pub trait Offers: Send + Sync + fmt::Debug {
    /// Remembers `offers` as made to `patient` (an offer made again starts a new
    /// lifetime).
    async fn put(&self, patient: &str, offers: &[Offer]) -> Result<(), StateError>;
    /// The offer `resource_type/id` made to `patient`, if it is still valid.
    async fn get(
        &self,
        patient: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Value>, StateError>;
}

/// The in-process store, bounded in count.
#[derive(Clone)]
pub struct MemoryOffers {
    offers: moka::sync::Cache<(String, String, String), Arc<Value>>,
}

impl fmt::Debug for MemoryOffers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryOffers")
            .field("entries", &self.offers.entry_count())
            .finish()
    }
}

impl MemoryOffers {
    pub fn new(lifetime: Duration, max_offers: u64) -> MemoryOffers {
        MemoryOffers {
            offers: moka::sync::Cache::builder()
                .time_to_live(lifetime)
                .max_capacity(max_offers)
                .build(),
        }
    }
}

impl Default for MemoryOffers {
    fn default() -> Self {
        MemoryOffers::new(OFFER_LIFETIME, 100_000)
    }
}

#[async_trait::async_trait]
impl Offers for MemoryOffers {
    async fn put(&self, patient: &str, offers: &[Offer]) -> Result<(), StateError> {
        for offer in offers {
            self.offers.insert(
                (
                    patient.to_owned(),
                    offer.resource_type.clone(),
                    offer.id.clone(),
                ),
                Arc::new(offer.resource.clone()),
            );
        }
        Ok(())
    }

    async fn get(
        &self,
        patient: &str,
        resource_type: &str,
        id: &str,
    ) -> Result<Option<Value>, StateError> {
        Ok(self
            .offers
            .get(&(patient.to_owned(), resource_type.to_owned(), id.to_owned()))
            .map(|v| (*v).clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_offers_pass_the_contract() {
        crate::contract::offers::run(async |lifetime| {
            Arc::new(MemoryOffers::new(lifetime, 1000)) as Arc<dyn Offers>
        })
        .await;
    }
}
