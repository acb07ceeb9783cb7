//! The portal's side of a patient's record: care team, appointments (cancelled and
//! upcoming), message threads, a referral, and the bills.

use super::*;

impl Writer<'_> {
    pub(super) fn write_care_team(&mut self) {
        let plan = self.plan;
        let mut participants = vec![json!({
            "role": [concept(codes::SNOMED, codes::PCP_ROLE)],
            "member": self.practitioner_ref(plan.pcp)
        })];
        for &specialist in &plan.specialists {
            participants.push(json!({
                "role": [concept(codes::SNOMED, self.world.practitioners[specialist].specialty.occupation)],
                "member": self.practitioner_ref(specialist)
            }));
        }
        let start = plan
            .visits
            .first()
            .map(|v| v.day)
            .unwrap_or(self.world.today);
        let resource = json!({
            "resourceType": "CareTeam",
            "id": format!("ct-{}", plan.key),
            "status": "active",
            "category": [concept(codes::LOINC, codes::LONGITUDINAL_CARE_TEAM)],
            "name": "Care team",
            "subject": self.patient_ref(),
            "period": { "start": date(start) },
            "participant": participants,
            "managingOrganization": [self.organization_ref()]
        });
        self.emit(resource);
    }

    pub(super) fn next_appointment_id(&mut self) -> String {
        let past = self
            .plan
            .visits
            .iter()
            .filter(|v| v.appointment.is_some())
            .count();
        self.appt_counter = self.appt_counter.max(past) + 1;
        format!("appt-{}-{}", self.plan.key, self.appt_counter)
    }

    pub(super) fn write_cancelled_appointment(&mut self) {
        if !self.rng.gen_bool(0.25) {
            return;
        }
        let plan = self.plan;
        let id = self.next_appointment_id();
        let day = days_before(self.world.today, self.rng.gen_range(20..200));
        let hour = self.rng.gen_range(9..16);
        let p = &self.world.practitioners[plan.pcp];
        let resource = json!({
            "resourceType": "Appointment",
            "id": id,
            "status": "cancelled",
            "cancelationReason": concept(codes::CANCELLATION_REASON, Code { code: "pat", display: "Patient" }),
            "serviceType": [concept(codes::SERVICE_TYPE, p.specialty.service_type)],
            "specialty": [concept(codes::SNOMED, p.specialty.setting)],
            "description": "Routine visit",
            "start": instant(day, hour, 0),
            "end": instant(day, hour, 30),
            "minutesDuration": 30,
            "created": date(days_before(day, self.rng.gen_range(5..30))),
            "participant": [
                { "actor": self.patient_ref(), "required": "required", "status": "declined" },
                { "actor": self.practitioner_ref(plan.pcp), "required": "required", "status": "accepted" }
            ]
        });
        self.emit(resource);
    }

    pub(super) fn write_upcoming(&mut self, booked_ordinal: usize, upcoming: usize) {
        for k in 0..upcoming {
            let slot = self
                .world
                .slot(self.world.booked_position(booked_ordinal + k));
            let p = &self.world.practitioners[slot.practitioner];
            let id = self.next_appointment_id();
            let resource = json!({
                "resourceType": "Appointment",
                "id": id,
                "status": "booked",
                "serviceType": [concept(codes::SERVICE_TYPE, p.specialty.service_type)],
                "specialty": [concept(codes::SNOMED, p.specialty.setting)],
                "appointmentType": concept(codes::V2_0276, Code { code: "ROUTINE", display: "Routine appointment - default if not valued" }),
                "description": format!("{} visit", p.specialty.service_type.display),
                "start": slot.start,
                "end": slot.end,
                "minutesDuration": 30,
                "slot": [reference("Slot", &slot.id)],
                "created": date(days_before(self.world.today, self.rng.gen_range(1..20))),
                "participant": [
                    { "actor": self.patient_ref(), "required": "required", "status": "accepted" },
                    { "actor": self.practitioner_ref(slot.practitioner), "required": "required", "status": "accepted" },
                    { "actor": self.location_ref(p.location), "required": "required", "status": "accepted" }
                ]
            });
            self.emit(resource);
        }
    }

    pub(super) fn write_threads(&mut self) {
        let plan = self.plan;
        let threads = self.rng.gen_range(1..=2);
        let topics = thread_topics(plan);
        let first_topic = self.rng.gen_range(0..topics.len());
        for t in 0..threads {
            let practitioner = if t == 0 {
                plan.pcp
            } else {
                plan.specialists.first().copied().unwrap_or(plan.pcp)
            };
            let (topic, messages) = &topics[(first_topic + t) % topics.len()];
            let header_id = format!("comm-{}-{}", plan.key, t + 1);
            let start = days_before(self.world.today, self.rng.gen_range(5..60));
            let mut minutes = self.rng.gen_range(8..17u32) * 60;
            let header = json!({
                "resourceType": "Communication",
                "id": header_id,
                "status": "in-progress",
                "topic": { "text": topic },
                "subject": self.patient_ref(),
                "recipient": [self.patient_ref(), self.practitioner_ref(practitioner)],
                "sent": instant(start, minutes / 60, minutes % 60)
            });
            self.emit(header);
            let count = self.rng.gen_range(2..=messages.len());
            let mut previous: Option<String> = None;
            for (m, text) in messages.iter().take(count).enumerate() {
                minutes += self.rng.gen_range(20..180);
                let day = days_after(start, u64::from(minutes / (24 * 60)));
                let time = minutes % (24 * 60);
                let from_patient = m % 2 == 0;
                let (sender, recipient) = if from_patient {
                    (self.patient_ref(), self.practitioner_ref(practitioner))
                } else {
                    (self.practitioner_ref(practitioner), self.patient_ref())
                };
                let id = format!("{header_id}-{}", m + 1);
                let mut message = json!({
                    "resourceType": "Communication",
                    "id": id,
                    "status": "completed",
                    "partOf": [reference("Communication", &header_id)],
                    "topic": { "text": topic },
                    "subject": self.patient_ref(),
                    "sender": sender,
                    "recipient": [recipient],
                    "sent": instant(day, time / 60, time % 60),
                    "payload": [{ "contentString": text }]
                });
                if let Some(previous) = &previous {
                    message["inResponseTo"] = json!([reference("Communication", previous)]);
                }
                self.emit(message);
                previous = Some(id);
            }
        }
    }

    pub(super) fn write_referral(&mut self) {
        let plan = self.plan;
        let Some(&specialist) = plan.specialists.first() else {
            return;
        };
        if !self.rng.gen_bool(0.4) {
            return;
        }
        let p = &self.world.practitioners[specialist];
        let mut resource = json!({
            "resourceType": "ServiceRequest",
            "id": format!("sr-{}-1", plan.key),
            "identifier": [{ "system": "urn:ietf:rfc:3986", "value": format!("urn:uuid:{}", uuid_like(self.world.seed, plan.number)) }],
            "status": "active",
            "intent": "order",
            "category": [concept(codes::SNOMED, codes::REFERRAL_CATEGORY)],
            "code": { "coding": [coding(codes::SNOMED, codes::REFERRAL_CODE)], "text": p.specialty.referral_text },
            "subject": self.patient_ref(),
            "authoredOn": date(days_before(self.world.today, self.rng.gen_range(5..60))),
            "requester": self.practitioner_ref(plan.pcp),
            "performerType": concept(codes::SNOMED, p.specialty.occupation),
            "performer": [self.practitioner_ref(specialist)]
        });
        if let Some(condition) = plan.conditions.iter().find(|c| c.def.chronic) {
            resource["reasonReference"] = json!([reference_display(
                "Condition",
                &condition.id,
                condition.def.snomed.display
            )]);
        }
        self.emit(resource);
    }

    pub(super) fn write_billing(&mut self) {
        let plan = self.plan;
        let count = self.rng.gen_range(1..=2).min(plan.visits.len());
        let account_id = format!("acct-{}", plan.key);
        let mut balance = 0;
        for k in 0..count {
            let visit_index = plan.visits.len() - 1 - k;
            let visit = &plan.visits[visit_index];
            let (visit_code, visit_cents) = match visit.class.code {
                "EMER" => (codes::ED_VISIT, 62_000),
                "IMP" => (codes::HOSPITAL_CARE, 245_000),
                _ => (codes::OFFICE_VISIT, 15_000),
            };
            let mut lines = vec![(visit_code, visit_cents)];
            lines.extend(
                plan.panels
                    .iter()
                    .filter(|p| p.visit == visit_index)
                    .map(|p| (p.panel.cpt, p.panel.price_cents)),
            );
            let total: u64 = lines.iter().map(|(_, cents)| cents).sum();
            balance += total;
            let line_items: Vec<Value> = lines
                .iter()
                .enumerate()
                .map(|(n, (code, cents))| {
                    json!({
                        "sequence": n + 1,
                        "chargeItemCodeableConcept": concept(codes::CPT, *code),
                        "priceComponent": [{ "type": "base", "amount": money(*cents) }]
                    })
                })
                .collect();
            let resource = json!({
                "resourceType": "Invoice",
                "id": format!("inv-{}-{}", plan.key, k + 1),
                "status": "issued",
                "subject": self.patient_ref(),
                "recipient": self.patient_ref(),
                "date": visit.end,
                "issuer": self.organization_ref(),
                "account": reference("Account", &account_id),
                "lineItem": line_items,
                "totalNet": money(total),
                "totalGross": money(total),
                "paymentTerms": "Due within 30 days of the invoice date"
            });
            self.emit(resource);
        }
        let since = plan
            .visits
            .first()
            .map(|v| v.day)
            .unwrap_or(self.world.today);
        let resource = json!({
            "resourceType": "Account",
            "id": account_id,
            "extension": [{ "url": codes::ACCOUNT_BALANCE_URL, "valueMoney": money(balance) }],
            "status": "active",
            "type": concept(codes::V3_ACT_CODE, Code { code: "PBILLACCT", display: "patient billing account" }),
            "name": "Patient account",
            "subject": [self.patient_ref()],
            "servicePeriod": { "start": date(since) },
            "coverage": [{ "coverage": reference("Coverage", &format!("cov-{}", plan.key)), "priority": 1 }],
            "owner": self.organization_ref(),
            "guarantor": [{ "party": self.patient_ref() }]
        });
        self.emit(resource);
    }
}

/// Conversation templates: a topic and alternating patient / clinician messages.
pub(super) fn thread_topics(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let med = plan
        .prescriptions
        .first()
        .map(|rx| rx.med.rxnorm.display)
        .unwrap_or("my medication");
    vec![
        (
            "Question about my medication".to_owned(),
            vec![
                format!("Hello, should I take my {med} with food or on an empty stomach?"),
                "Taking it with a meal is fine and can help avoid an upset stomach.".to_owned(),
                "Thank you, that helps.".to_owned(),
                "You're welcome. Let us know if anything changes.".to_owned(),
            ],
        ),
        (
            "Lab results".to_owned(),
            vec![
                "I saw my latest lab results in the portal. Is there anything I should worry about?".to_owned(),
                "Your results are stable. We will review them together at your next visit.".to_owned(),
                "Great, see you then.".to_owned(),
            ],
        ),
        (
            "Follow-up after my visit".to_owned(),
            vec![
                "I am feeling better since the visit. Do I still need the follow-up appointment?".to_owned(),
                "Glad to hear it. Please keep the appointment so we can check your progress.".to_owned(),
                "Will do.".to_owned(),
            ],
        ),
    ]
}
