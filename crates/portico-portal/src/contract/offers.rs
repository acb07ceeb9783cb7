//! The [`Offers`] contract: offers are kept per patient and type, replaced when made
//! again, and forgotten after the store's lifetime.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::offers::{Offer, Offers};

fn offer(id: &str, start: &str) -> Offer {
    Offer {
        resource_type: "Appointment".to_owned(),
        id: id.to_owned(),
        resource: json!({"resourceType": "Appointment", "id": id, "status": "proposed",
            "start": start, "participant": [{"actor": {"reference": "Patient/pat-1"}}]}),
    }
}

/// Runs the whole suite. `make` builds a fresh, empty store whose offers live for the
/// given lifetime.
pub async fn run(make: impl AsyncFn(Duration) -> Arc<dyn Offers>) {
    per_patient_and_type(make(Duration::from_secs(600)).await.as_ref()).await;
    offers_expire(make(Duration::from_millis(500)).await.as_ref()).await;
}

/// Only the patient an offer was made to finds it, under its type and id.
pub async fn per_patient_and_type(store: &dyn Offers) {
    let (a, b) = (
        offer("a1", "2030-01-01T09:00:00Z"),
        offer("a2", "2030-01-02T09:00:00Z"),
    );
    store.put("pat-1", &[a.clone(), b.clone()]).await.unwrap();
    store.put("pat-2", &[]).await.unwrap();
    let get = |patient: &'static str, rt: &'static str, id: &'static str| async move {
        store.get(patient, rt, id).await.unwrap()
    };
    assert_eq!(
        get("pat-1", "Appointment", "a1").await,
        Some(a.resource.clone())
    );
    assert_eq!(get("pat-1", "Appointment", "a2").await, Some(b.resource));
    assert_eq!(get("pat-12", "Appointment", "a1").await, None);
    assert_eq!(get("pat-2", "Appointment", "a1").await, None);
    assert_eq!(get("pat-1", "Slot", "a1").await, None);
    assert_eq!(get("pat-1", "Appointment", "a").await, None);
    // Made again, the offer is replaced.
    let mut changed = a.clone();
    changed.resource["start"] = Value::from("2030-01-03T09:00:00Z");
    store.put("pat-1", &[changed.clone()]).await.unwrap();
    assert_eq!(
        get("pat-1", "Appointment", "a1").await,
        Some(changed.resource)
    );
}

/// Past the lifetime, an offer is gone.
pub async fn offers_expire(store: &dyn Offers) {
    let a = offer("a1", "2030-01-01T09:00:00Z");
    store.put("pat-1", std::slice::from_ref(&a)).await.unwrap();
    assert_eq!(
        store.get("pat-1", "Appointment", "a1").await.unwrap(),
        Some(a.resource)
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(store.get("pat-1", "Appointment", "a1").await.unwrap(), None);
}
