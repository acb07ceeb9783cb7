//! A patient's plan: who they are and what their record will hold (conditions, visits,
//! panels, prescriptions), drawn from the seed before anything is written.

use super::*;

impl Plan {
    /// Plans patient `number`; `identity`, when given, decides who they are (and the
    /// RNG draws nothing for it).
    pub(super) fn new(
        world: &World,
        number: usize,
        identity: Option<&Identity>,
        rng: &mut StdRng,
    ) -> Plan {
        let today = world.today;
        let (female, given, family, age, birth_date) = match identity {
            None => {
                let female = rng.gen_bool(0.5);
                let given = if female {
                    pick(rng, &codes::FEMALE_GIVEN)
                } else {
                    pick(rng, &codes::MALE_GIVEN)
                };
                let family = pick(rng, &codes::FAMILY);
                let age: u32 = if rng.gen_bool(0.1) {
                    rng.gen_range(2..=17)
                } else {
                    rng.gen_range(18..=90)
                };
                let birth_date = days_before(today, u64::from(age) * 365 + rng.gen_range(0..365));
                (female, given, family, age, birth_date)
            }
            Some(who) => (
                who.female,
                who.given,
                who.family,
                full_years(who.birth_date, today),
                who.birth_date,
            ),
        };
        let key = identity.map_or_else(|| number.to_string(), |who| who.id.to_owned());
        // History never starts before birth (the youngest patients are two years old).
        let lived_days = u64::from(age) * 365;
        let height_cm = if age < 18 {
            75.0 + f64::from(age) * 5.8 + rng.gen_range(-4.0..4.0)
        } else if female {
            rng.gen_range(152.0..176.0)
        } else {
            rng.gen_range(164.0..192.0)
        };
        let bmi = if age < 18 {
            rng.gen_range(15.0..21.0)
        } else {
            rng.gen_range(19.0..35.0)
        };
        let weight_kg = bmi * (height_cm / 100.0) * (height_cm / 100.0);

        let pcp = world.family_medicine[rng.gen_range(0..world.family_medicine.len())];
        let specialist_count = rng.gen_range(1..=2).min(world.specialists.len());
        let specialists: Vec<usize> = world
            .specialists
            .choose_multiple(rng, specialist_count)
            .copied()
            .collect();

        // Conditions: 2-5 distinct, appropriate for the age.
        let eligible: Vec<&ConditionDef> = codes::CONDITIONS
            .iter()
            .filter(|c| c.min_age <= age)
            .collect();
        let count = rng.gen_range(2..=5).min(eligible.len());
        let conditions = eligible
            .choose_multiple(rng, count)
            .enumerate()
            .map(|(k, def)| {
                let onset = if def.chronic {
                    let max_days =
                        (u64::from(age.saturating_sub(def.min_age)) * 365).clamp(200, 3650);
                    days_before(today, rng.gen_range(180..max_days))
                } else {
                    days_before(today, rng.gen_range(30..1000u64.min(lived_days)))
                };
                ConditionPlan {
                    id: format!("cond-{key}-{}", k + 1),
                    def: **def,
                    onset,
                }
            })
            .collect();

        // Visits: 2-5 over the last three years, oldest first; the first is ambulatory.
        let visit_count = rng.gen_range(2..=5);
        let mut days_ago: Vec<u64> = Vec::with_capacity(visit_count);
        while days_ago.len() < visit_count {
            let d = rng.gen_range(7..1095u64.min(lived_days));
            if !days_ago.contains(&d) {
                days_ago.push(d);
            }
        }
        days_ago.sort_unstable_by(|a, b| b.cmp(a));
        let mut visits = Vec::with_capacity(visit_count);
        let mut appointments = 0;
        for (k, ago) in days_ago.iter().enumerate() {
            let day = days_before(today, *ago);
            let roll: f64 = if k == 0 { 0.0 } else { rng.gen_range(0.0..1.0) };
            let visit = if roll < 0.75 {
                let practitioner = if rng.gen_bool(0.75) {
                    pcp
                } else {
                    specialists.first().copied().unwrap_or(pcp)
                };
                let hour = rng.gen_range(9..16);
                let minute = if rng.gen_bool(0.5) { 0 } else { 30 };
                appointments += 1;
                Visit {
                    id: format!("enc-{key}-{}", k + 1),
                    class: codes::AMBULATORY,
                    kind: *codes::AMBULATORY_TYPES
                        .choose(rng)
                        .unwrap_or(&codes::AMBULATORY_TYPES[0]),
                    day,
                    start: instant(day, hour, minute),
                    end: instant(day, hour, minute + 29),
                    practitioner,
                    location: world.practitioners[practitioner].location,
                    appointment: Some(format!("appt-{key}-{appointments}")),
                }
            } else if roll < 0.9 {
                let hour = rng.gen_range(0..20);
                Visit {
                    id: format!("enc-{key}-{}", k + 1),
                    class: codes::EMERGENCY,
                    kind: codes::EMERGENCY_TYPE,
                    day,
                    start: instant(day, hour, 15),
                    end: instant(day, hour + rng.gen_range(2..4), 45),
                    practitioner: rng.gen_range(0..world.practitioners.len()),
                    location: HOSPITAL_LOCATION,
                    appointment: None,
                }
            } else {
                let stay = rng.gen_range(2..5);
                Visit {
                    id: format!("enc-{key}-{}", k + 1),
                    class: codes::INPATIENT,
                    kind: codes::INPATIENT_TYPE,
                    day,
                    start: instant(day, 14, 0),
                    end: instant(days_after(day, stay).min(days_before(today, 1)), 11, 0),
                    practitioner: rng.gen_range(0..world.practitioners.len()),
                    location: HOSPITAL_LOCATION,
                    appointment: None,
                }
            };
            visits.push(visit);
        }

        // Observations: 10-30 in all. Lab panels first, vitals fill the rest.
        let target: usize = rng.gen_range(10..=30);
        let panel_count = rng.gen_range(2..=4);
        let panels: Vec<PanelPlan> = (0..panel_count)
            .map(|_| PanelPlan {
                panel: *pick_ref(rng, &codes::PANELS),
                visit: rng.gen_range(0..visits.len()),
            })
            .collect();
        let lab_count: usize = panels.iter().map(|p| p.panel.members.len()).sum();
        let vital_budget = target
            .saturating_sub(lab_count)
            .clamp(visits.len(), VITAL_KINDS * visits.len());
        let vitals_per_visit = (0..visits.len())
            .map(|k| vital_budget / visits.len() + usize::from(k < vital_budget % visits.len()))
            .collect();

        let prescriptions = plan_prescriptions(rng, today);

        Plan {
            id: identity.map_or_else(|| format!("pat-{number}"), |who| who.id.to_owned()),
            links: identity.map(|who| who.links.clone()).unwrap_or_default(),
            key,
            number,
            given,
            family,
            gender: if female { "female" } else { "male" },
            birth_date,
            age,
            height_cm,
            weight_kg,
            pcp,
            specialists,
            conditions,
            visits,
            panels,
            vitals_per_visit,
            prescriptions,
        }
    }

    pub(super) fn summary(&self) -> PatientSummary {
        PatientSummary {
            id: self.id.clone(),
            name: format!("{} {}", self.given, self.family),
            birth_date: date(self.birth_date),
        }
    }

    pub(super) fn has_condition(&self, snomed: &str) -> bool {
        self.conditions.iter().any(|c| c.def.snomed.code == snomed)
    }
}

/// Three continuous prescriptions, one in each refill situation, plus sometimes a
/// finished acute course:
/// 1. refills left: active, valid, fewer completed dispenses than repeats + 1, and
///    due (the last fill's supply has run out);
/// 2. none left: active, valid, repeats + 1 completed dispenses;
/// 3. expired: active but its validity period ended before today.
pub(super) fn plan_prescriptions(rng: &mut StdRng, today: NaiveDate) -> Vec<Prescription> {
    let meds: Vec<MedicationDef> = codes::CHRONIC_MEDICATIONS
        .choose_multiple(rng, 3)
        .copied()
        .collect();
    let mut out = Vec::with_capacity(4);
    if let [first, second, third] = meds.as_slice() {
        let supply = u64::from(first.supply_days);
        let repeats = rng.gen_range(2..=5);
        let max_dispenses = 1 + (300 / supply) as u32;
        // Due for a refill: the last fill's supply ran out 1 to 25 days ago, so the
        // portal's minimum-interval rule lets the patient ask for the next one. The cap
        // keeps the prescription inside its 365-day validity (the rng calls stay the
        // same, so the rest of the data is unchanged).
        let dispenses = rng
            .gen_range(1..=repeats.min(max_dispenses))
            .min((330 / supply) as u32);
        let ago = u64::from(dispenses) * supply + rng.gen_range(3..25);
        out.push(Prescription {
            med: *first,
            status: "active",
            course: CONTINUOUS,
            authored: days_before(today, ago),
            validity_days: 365,
            repeats,
            dispenses,
        });

        let supply = u64::from(second.supply_days);
        let repeats = rng.gen_range(0..=2);
        let ago = u64::from(repeats) * supply + rng.gen_range(3..25);
        out.push(Prescription {
            med: *second,
            status: "active",
            course: CONTINUOUS,
            authored: days_before(today, ago),
            validity_days: 365,
            repeats,
            dispenses: repeats + 1,
        });

        let repeats = rng.gen_range(1..=3);
        out.push(Prescription {
            med: *third,
            status: "active",
            course: CONTINUOUS,
            authored: days_before(today, rng.gen_range(400..700)),
            validity_days: 365,
            repeats,
            dispenses: rng.gen_range(1..=repeats),
        });
    }
    if rng.gen_bool(0.5) {
        out.push(Prescription {
            med: codes::ACUTE_MEDICATION,
            status: "completed",
            course: ACUTE,
            authored: days_before(today, rng.gen_range(40..200)),
            validity_days: 30,
            repeats: 0,
            dispenses: 1,
        });
    }
    out
}
