//! The sandbox EHR's business rules: what a real EHR does on its own when a resource
//! is written, beyond storing it.
//!
//! [`apply`] is called by the [`crate::store::Store`] for every write (create, update,
//! delete, and each write of a transaction; JSON Patch ends in an update) *under the
//! same write lock as the write itself*, before anything is stored. It sees the state
//! the write starts from through a [`View`] and either refuses the write
//! ([`RuleError`], nothing is stored) or returns further writes ([`Write`]) that the
//! store applies atomically with it. The generator's bulk load does not run the rules:
//! generated data is consistent by construction.
//!
//! Rules, by resource type:
//! - **Appointment** ([`appointment`]): an Appointment *holds* the Slots it references
//!   while its status is booked, arrived, checked-in or fulfilled. A write that makes it
//!   hold a Slot it did not hold before (creating it `booked`, `proposed` → `booked`,
//!   replacing `/slot` on a booked one) needs that Slot to exist and be `free` — else
//!   409 "slot is not free" — and marks it `busy`. A write that makes it stop holding a
//!   Slot (`cancelled`, `noshow`, `entered-in-error`, deletion, a replaced `/slot`)
//!   frees that Slot again when it is `busy`.
//! - **PaymentReconciliation** ([`billing`]): a `payment` detail whose `request` is an
//!   Account posts its amount to that Account's balance extension (down when the
//!   reconciliation becomes `active`, back up when it stops being active or is
//!   deleted); a payment that cannot be posted (no such Account, no balance, another
//!   currency) is refused with 409.
//!
//! To add a rule: write a function like [`appointment`] and dispatch to it in
//! [`apply`]. Rules must be deterministic and quick: they run inside the store's lock.

use std::collections::{BTreeMap, BTreeSet};

use portico_fhir::reference::Reference;
use serde_json::Value;

/// Read access to the current state, as the write being checked starts from it
/// (inside a transaction: with the transaction's earlier writes applied).
pub trait View {
    /// The current (live) resource `ty/id`, or `None` when it does not exist or was
    /// deleted.
    fn current(&self, ty: &str, id: &str) -> Option<Value>;
}

/// A further write a rule asks for: store `resource` as the new version of `ty/id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub resource_type: &'static str,
    pub id: String,
    pub resource: Value,
}

/// Why a rule refused a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The write conflicts with the current state (409, issue code `conflict`).
    #[error("{0}")]
    Conflict(String),
}

/// Runs the rules of `ty` for a write from `old` (`None`: a create) to `new` (`None`: a
/// deletion). Returns the further writes to apply atomically with it.
pub fn apply(
    view: &dyn View,
    ty: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<Vec<Write>, RuleError> {
    match ty {
        "Appointment" => appointment(view, old, new),
        "PaymentReconciliation" => billing(view, old, new),
        _ => Ok(Vec::new()),
    }
}

/// Appointment statuses in which an Appointment holds its Slots.
const HOLDING: &[&str] = &["booked", "arrived", "checked-in", "fulfilled"];

/// The Slot ids an Appointment holds (none unless its status is a holding one).
fn held_slots(appointment: Option<&Value>) -> BTreeSet<String> {
    let Some(a) = appointment else {
        return BTreeSet::new();
    };
    let holding = a
        .get("status")
        .and_then(Value::as_str)
        .is_some_and(|s| HOLDING.contains(&s));
    if !holding {
        return BTreeSet::new();
    }
    a.get("slot")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("reference").and_then(Value::as_str))
        .map(|r| match Reference::parse(r) {
            Ok(r) if r.resource_type == "Slot" && r.base.is_none() => r.id,
            // Kept unparsed so that booking it fails as "not free" (it names no Slot here).
            _ => format!("\u{0}{r}"),
        })
        .collect()
}

fn slot_status(slot: &Value) -> Option<&str> {
    slot.get("status").and_then(Value::as_str)
}

fn with_status(mut slot: Value, status: &str) -> Value {
    if let Some(map) = slot.as_object_mut() {
        map.insert("status".to_owned(), Value::String(status.to_owned()));
    }
    slot
}

/// Slot booking: see the module docs.
pub fn appointment(
    view: &dyn View,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<Vec<Write>, RuleError> {
    let before = held_slots(old);
    let after = held_slots(new);
    let mut writes = Vec::new();
    for id in after.difference(&before) {
        let slot = view
            .current("Slot", id)
            .filter(|s| slot_status(s) == Some("free"))
            .ok_or_else(|| RuleError::Conflict("slot is not free".to_owned()))?;
        writes.push(Write {
            resource_type: "Slot",
            id: id.clone(),
            resource: with_status(slot, "busy"),
        });
    }
    for id in before.difference(&after) {
        if let Some(slot) = view
            .current("Slot", id)
            .filter(|s| slot_status(s) == Some("busy"))
        {
            writes.push(Write {
                resource_type: "Slot",
                id: id.clone(),
                resource: with_status(slot, "free"),
            });
        }
    }
    Ok(writes)
}

/// The balance extension the generator puts on Accounts (Cerner's `account-balance`).
pub const ACCOUNT_BALANCE_URL: &str =
    "https://fhir-ehr.cerner.com/r4/StructureDefinition/account-balance";

/// What a PaymentReconciliation posts to Accounts, in cents per Account id: the
/// `amount` of each `detail` of type `payment` whose `request` is an Account, while
/// the reconciliation is `active` (a cancelled or entered-in-error one posts nothing).
fn postings(pr: Option<&Value>) -> BTreeMap<String, (i64, Option<String>)> {
    let mut out: BTreeMap<String, (i64, Option<String>)> = BTreeMap::new();
    let Some(pr) = pr else { return out };
    if pr.get("status").and_then(Value::as_str) != Some("active") {
        return out;
    }
    for detail in pr
        .get("detail")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let is_payment = detail
            .pointer("/type/coding")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c.get("code").and_then(Value::as_str) == Some("payment"));
        let account = detail
            .pointer("/request/reference")
            .and_then(Value::as_str)
            .and_then(|r| Reference::parse(r).ok())
            .filter(|r| r.resource_type == "Account" && r.base.is_none());
        let amount = detail.get("amount").and_then(cents);
        if let (true, Some(account), Some((value, currency))) = (is_payment, account, amount) {
            let entry = out.entry(account.id).or_insert((0, currency.clone()));
            entry.0 += value;
            if entry.1 != currency {
                entry.1 = None;
            }
        }
    }
    out
}

/// A Money value in cents, with its currency.
fn cents(money: &Value) -> Option<(i64, Option<String>)> {
    let value = money.get("value")?.as_f64()?;
    if !value.is_finite() || value.abs() > 1e12 {
        return None;
    }
    let currency = money
        .get("currency")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Some(((value * 100.0).round() as i64, currency))
}

/// Payments post to Account balances, as a billing system does: the balance extension
/// ([`ACCOUNT_BALANCE_URL`], `valueMoney`) of each Account a `payment` detail requests
/// drops by the detail's amount when the PaymentReconciliation becomes `active`, and
/// rises again when it stops being active or is deleted. An overpayment leaves a
/// negative balance (a credit). A payment in another currency than the balance, or to
/// an Account that does not exist or has no balance, is refused (409): it could not be
/// posted.
pub fn billing(
    view: &dyn View,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<Vec<Write>, RuleError> {
    let before = postings(old);
    let after = postings(new);
    let accounts: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut writes = Vec::new();
    for id in accounts {
        let (paid_after, currency_after) = after.get(id).cloned().unwrap_or((0, None));
        let (paid_before, _) = before.get(id).cloned().unwrap_or((0, None));
        let delta = paid_after - paid_before;
        if delta == 0 {
            continue;
        }
        let refuse = |why: &str| RuleError::Conflict(format!("payment cannot be posted: {why}"));
        let mut account = view
            .current("Account", id)
            .ok_or_else(|| refuse("no such account"))?;
        let Some(extension) = account
            .get_mut("extension")
            .and_then(Value::as_array_mut)
            .and_then(|list| {
                list.iter_mut()
                    .find(|e| e.get("url").and_then(Value::as_str) == Some(ACCOUNT_BALANCE_URL))
            })
        else {
            return Err(refuse("the account has no balance"));
        };
        let (balance, balance_currency) = extension
            .get("valueMoney")
            .and_then(cents)
            .ok_or_else(|| refuse("the account has no balance"))?;
        if paid_after != 0 && currency_after != balance_currency {
            return Err(refuse("the currency is not the account's"));
        }
        let mut money = serde_json::Map::new();
        money.insert(
            "value".to_owned(),
            serde_json::json!((balance - delta) as f64 / 100.0),
        );
        if let Some(c) = balance_currency {
            money.insert("currency".to_owned(), Value::String(c));
        }
        extension["valueMoney"] = Value::Object(money);
        writes.push(Write {
            resource_type: "Account",
            id: id.clone(),
            resource: account,
        });
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    struct Map(HashMap<String, Value>);

    impl View for Map {
        fn current(&self, ty: &str, id: &str) -> Option<Value> {
            self.0.get(&format!("{ty}/{id}")).cloned()
        }
    }

    fn view(slots: &[(&str, &str)]) -> Map {
        Map(slots
            .iter()
            .map(|(id, status)| {
                (
                    format!("Slot/{id}"),
                    json!({"resourceType": "Slot", "id": id, "status": status}),
                )
            })
            .collect())
    }

    fn appt(status: &str, slots: &[&str]) -> Value {
        let slots: Vec<Value> = slots
            .iter()
            .map(|s| json!({"reference": format!("Slot/{s}")}))
            .collect();
        json!({"resourceType": "Appointment", "status": status, "slot": slots})
    }

    fn statuses(writes: &[Write]) -> Vec<(String, String)> {
        writes
            .iter()
            .map(|w| {
                (
                    w.id.clone(),
                    w.resource["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn booking_needs_a_free_slot_and_makes_it_busy() {
        let v = view(&[("s1", "free"), ("s2", "busy")]);
        let writes = apply(&v, "Appointment", None, Some(&appt("booked", &["s1"]))).unwrap();
        assert_eq!(statuses(&writes), [("s1".into(), "busy".into())]);
        assert_eq!(writes[0].resource_type, "Slot");
        assert_eq!(
            apply(&v, "Appointment", None, Some(&appt("booked", &["s2"]))),
            Err(RuleError::Conflict("slot is not free".into()))
        );
        // A Slot that does not exist, or a reference that names no local Slot.
        assert!(apply(&v, "Appointment", None, Some(&appt("booked", &["nope"]))).is_err());
        let remote = json!({"resourceType": "Appointment", "status": "booked",
            "slot": [{"reference": "http://elsewhere/fhir/Slot/s1"}]});
        assert!(apply(&v, "Appointment", None, Some(&remote)).is_err());
    }

    #[test]
    fn proposals_hold_nothing_until_booked() {
        let v = view(&[("s1", "free"), ("s2", "busy")]);
        assert!(
            apply(&v, "Appointment", None, Some(&appt("proposed", &["s2"])))
                .unwrap()
                .is_empty()
        );
        let writes = apply(
            &v,
            "Appointment",
            Some(&appt("proposed", &["s1"])),
            Some(&appt("booked", &["s1"])),
        )
        .unwrap();
        assert_eq!(statuses(&writes), [("s1".into(), "busy".into())]);
    }

    #[test]
    fn unchanged_bookings_are_not_rechecked() {
        // booked → arrived on the same (busy) Slot: nothing to do, no conflict.
        let v = view(&[("s1", "busy")]);
        let writes = apply(
            &v,
            "Appointment",
            Some(&appt("booked", &["s1"])),
            Some(&appt("arrived", &["s1"])),
        )
        .unwrap();
        assert!(writes.is_empty());
    }

    #[test]
    fn cancelling_noshow_error_and_deletion_free_the_slot() {
        let v = view(&[("s1", "busy")]);
        for status in ["cancelled", "noshow", "entered-in-error"] {
            let writes = apply(
                &v,
                "Appointment",
                Some(&appt("booked", &["s1"])),
                Some(&appt(status, &["s1"])),
            )
            .unwrap();
            assert_eq!(
                statuses(&writes),
                [("s1".into(), "free".into())],
                "{status}"
            );
        }
        let writes = apply(&v, "Appointment", Some(&appt("booked", &["s1"])), None).unwrap();
        assert_eq!(statuses(&writes), [("s1".into(), "free".into())]);
        // A proposal held nothing, so cancelling it frees nothing.
        assert!(
            apply(
                &v,
                "Appointment",
                Some(&appt("proposed", &["s1"])),
                Some(&appt("cancelled", &["s1"]))
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn replacing_the_slot_moves_the_booking() {
        let v = view(&[("s1", "busy"), ("s2", "free"), ("s3", "busy")]);
        let writes = apply(
            &v,
            "Appointment",
            Some(&appt("booked", &["s1"])),
            Some(&appt("booked", &["s2"])),
        )
        .unwrap();
        assert_eq!(
            statuses(&writes),
            [("s2".into(), "busy".into()), ("s1".into(), "free".into())]
        );
        assert!(
            apply(
                &v,
                "Appointment",
                Some(&appt("booked", &["s1"])),
                Some(&appt("booked", &["s3"]))
            )
            .is_err()
        );
    }

    // The store runs the rules on every write path, atomically with the write.

    use crate::store::{Created, Store, StoreError, TxOp};

    fn store_with_slots(slots: &[(&str, &str)]) -> Store {
        let store = Store::new();
        for (id, status) in slots {
            store
                .insert_loaded(json!({"resourceType": "Slot", "id": id, "status": status,
                    "start": "2030-01-01T09:00:00Z", "end": "2030-01-01T09:30:00Z"}))
                .unwrap();
        }
        store
    }

    fn slot_in(store: &Store, id: &str) -> String {
        let r = store.read("Slot", id).unwrap();
        let v: Value = serde_json::from_slice(&r.body.unwrap()).unwrap();
        v["status"].as_str().unwrap().to_owned()
    }

    fn body(r: &crate::store::StoredResource) -> Value {
        serde_json::from_slice(r.body.as_ref().unwrap()).unwrap()
    }

    #[test]
    fn store_create_update_and_delete_run_the_rules() {
        let store = store_with_slots(&[("s1", "free"), ("s2", "free")]);
        let Created::New(a) = store
            .create("Appointment", appt("booked", &["s1"]), None)
            .unwrap()
        else {
            panic!("created")
        };
        assert_eq!(slot_in(&store, "s1"), "busy");
        assert_eq!(store.read("Slot", "s1").unwrap().version, 2);
        // The EHR is the arbiter: a second booking of the slot is refused, nothing stored.
        let before = store.count("Appointment");
        assert_eq!(
            store
                .create("Appointment", appt("booked", &["s1"]), None)
                .unwrap_err(),
            StoreError::Conflict("slot is not free".into())
        );
        assert_eq!(store.count("Appointment"), before);
        // Moving the booking (what a JSON Patch of /slot becomes) moves the busy slot.
        let mut moved = body(&a);
        moved["slot"] = json!([{"reference": "Slot/s2"}]);
        store
            .update("Appointment", &a.id, moved.clone(), Some(a.version))
            .unwrap();
        assert_eq!(
            (slot_in(&store, "s1"), slot_in(&store, "s2")),
            ("free".into(), "busy".into())
        );
        // Cancelling frees it.
        let mut cancelled = moved;
        cancelled["status"] = json!("cancelled");
        let c = store
            .update("Appointment", &a.id, cancelled, None)
            .unwrap()
            .0;
        assert_eq!(slot_in(&store, "s2"), "free");
        // An update that would book a busy slot is refused and leaves everything as it was.
        let other = store
            .create("Appointment", appt("booked", &["s2"]), None)
            .unwrap();
        assert!(matches!(other, Created::New(_)));
        let mut rebook = body(&c);
        rebook["status"] = json!("booked");
        assert!(matches!(
            store.update("Appointment", &a.id, rebook, None),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(store.read("Appointment", &a.id).unwrap().version, c.version);
        // Deleting a booked appointment frees its slot.
        let Created::New(other) = other else {
            unreachable!()
        };
        store.delete("Appointment", &other.id, None).unwrap();
        assert_eq!(slot_in(&store, "s2"), "free");
    }

    #[test]
    fn transactions_run_the_rules_in_order_and_atomically() {
        let store = store_with_slots(&[("s1", "free"), ("s2", "free")]);
        let ty = crate::search::type_info("Appointment").unwrap();
        let create = |slot: &str| TxOp::Create {
            ty,
            id: uuid::Uuid::new_v4().to_string(),
            full_url: None,
            resource: appt("booked", &[slot]),
            condition: None,
        };
        // Two bookings of the same slot in one transaction: the second sees the first.
        let err = store.transaction(vec![create("s2"), create("s1"), create("s1")]);
        assert!(matches!(err, Err((2, StoreError::Conflict(_)))), "{err:?}");
        assert_eq!(store.count("Appointment"), 0, "nothing was written");
        assert_eq!(
            (slot_in(&store, "s1"), slot_in(&store, "s2")),
            ("free".into(), "free".into())
        );
        let done = store.transaction(vec![create("s1"), create("s2")]).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            (slot_in(&store, "s1"), slot_in(&store, "s2")),
            ("busy".into(), "busy".into())
        );
        // Cancel one and book its slot again in the same transaction.
        let first = store.ids("Appointment")[0].clone();
        let mut cancelled = body(&store.read("Appointment", &first).unwrap());
        cancelled["status"] = json!("cancelled");
        let slot = cancelled["slot"][0]["reference"]
            .as_str()
            .unwrap()
            .trim_start_matches("Slot/")
            .to_owned();
        let version_before = store.read("Slot", &slot).unwrap().version;
        store
            .transaction(vec![
                TxOp::Update {
                    ty,
                    id: first,
                    resource: cancelled,
                    if_match: None,
                },
                create(&slot),
            ])
            .unwrap();
        assert_eq!(slot_in(&store, &slot), "busy");
        let after = store.read("Slot", &slot).unwrap();
        assert_eq!(after.version, version_before + 2, "freed, then booked");
        assert_eq!(
            body(&after)["meta"]["versionId"],
            json!((version_before + 2).to_string())
        );
    }

    #[test]
    fn other_types_have_no_rules_yet() {
        let v = view(&[]);
        let payment = json!({"resourceType": "PaymentReconciliation", "status": "active"});
        assert!(
            apply(&v, "PaymentReconciliation", None, Some(&payment))
                .unwrap()
                .is_empty()
        );
        assert!(
            apply(&v, "Observation", None, Some(&json!({})))
                .unwrap()
                .is_empty()
        );
    }

    fn payment(status: &str, account: &str, value: f64, currency: &str) -> Value {
        json!({"resourceType": "PaymentReconciliation", "status": status, "detail": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}]},
            "request": {"reference": format!("Account/{account}")},
            "amount": {"value": value, "currency": currency}
        }]})
    }

    fn account_view(balance: f64) -> Map {
        Map(HashMap::from([(
            "Account/acct-1".to_owned(),
            json!({"resourceType": "Account", "id": "acct-1", "extension": [
                {"url": ACCOUNT_BALANCE_URL, "valueMoney": {"value": balance, "currency": "USD"}}
            ]}),
        )]))
    }

    fn balance_after(writes: &[Write]) -> f64 {
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].resource_type, "Account");
        writes[0].resource["extension"][0]["valueMoney"]["value"]
            .as_f64()
            .unwrap()
    }

    #[test]
    fn payments_post_to_the_account_balance() {
        let v = account_view(150.10);
        let paid = payment("active", "acct-1", 50.05, "USD");
        let writes = apply(&v, "PaymentReconciliation", None, Some(&paid)).unwrap();
        assert_eq!(balance_after(&writes), 100.05);
        // Cancelling the payment puts the amount back.
        let cancelled = payment("cancelled", "acct-1", 50.05, "USD");
        let writes = apply(&v, "PaymentReconciliation", Some(&paid), Some(&cancelled)).unwrap();
        assert_eq!(balance_after(&writes), 200.15);
        // An update that changes nothing posts nothing.
        assert!(
            apply(&v, "PaymentReconciliation", Some(&paid), Some(&paid))
                .unwrap()
                .is_empty()
        );
        // What cannot be posted is refused.
        for bad in [
            payment("active", "acct-9", 1.0, "USD"),
            payment("active", "acct-1", 1.0, "EUR"),
        ] {
            assert!(apply(&v, "PaymentReconciliation", None, Some(&bad)).is_err());
        }
    }
}
