//! Search evaluation inside the store: criteria compiled to atoms, matched through the
//! inverted index or tested slot by slot, sorted, and `_include`/`_revinclude` resolved.

use super::*;

/// A criterion with its strings resolved to atoms, ready to test against slots.
pub(super) enum Compiled<'q> {
    Id(&'q [String]),
    LastUpdated(&'q [(portico_fhir::search::Prefix, DateRange)]),
    Missing {
        field: u8,
        targets: &'static [&'static str],
        missing: bool,
    },
    Ref {
        field: u8,
        atoms: Vec<u32>,
    },
    Token {
        field: u8,
        not: bool,
        /// (system: None = any, Some(NO_SYSTEM) = none; code: None = any).
        values: Vec<(Option<u32>, Option<u32>)>,
    },
    Date {
        field: u8,
        values: &'q [(portico_fhir::search::Prefix, DateRange)],
    },
    Str {
        field: u8,
        mode: StringMatch,
        values: &'q [String],
    },
}

impl Inner {
    pub(super) fn compile<'q>(&self, criteria: &'q [Criterion]) -> Vec<Compiled<'q>> {
        criteria
            .iter()
            .map(|c| match c {
                Criterion::Id(ids) => Compiled::Id(ids),
                Criterion::LastUpdated(values) => Compiled::LastUpdated(values),
                Criterion::Missing {
                    field,
                    targets,
                    missing,
                } => Compiled::Missing {
                    field: *field,
                    targets,
                    missing: *missing,
                },
                Criterion::Ref { field, values } => Compiled::Ref {
                    field: *field,
                    atoms: values.iter().filter_map(|v| self.atoms.get(v)).collect(),
                },
                Criterion::Token { field, not, values } => Compiled::Token {
                    field: *field,
                    not: *not,
                    values: values
                        .iter()
                        .filter_map(|(system, code)| {
                            let system = match system.as_deref() {
                                None => None,
                                Some("") => Some(NO_SYSTEM),
                                Some(s) => Some(self.atoms.get(s)?),
                            };
                            let code = match code.as_str() {
                                "" => None,
                                c => Some(self.atoms.get(c)?),
                            };
                            Some((system, code))
                        })
                        .collect(),
                },
                Criterion::Date { field, values } => Compiled::Date {
                    field: *field,
                    values,
                },
                Criterion::Str {
                    field,
                    mode,
                    values,
                } => Compiled::Str {
                    field: *field,
                    mode: *mode,
                    values,
                },
            })
            .collect()
    }

    /// The live slots of `ty` matching every criterion, in creation order.
    pub(super) fn matching(&self, ty: &TypeInfo, criteria: &[Criterion]) -> Vec<u32> {
        let table = &self.tables[ty.index];
        let compiled = self.compile(criteria);
        // Pick the most selective criterion that an index can answer.
        let mut best: Option<Vec<u32>> = None;
        for c in &compiled {
            let candidates = match c {
                Compiled::Id(ids) => Some(
                    ids.iter()
                        .filter_map(|id| table.by_id.get(id.as_str()).copied())
                        .collect::<Vec<_>>(),
                ),
                Compiled::Ref { field, atoms } => {
                    Some(union(atoms.iter().map(|a| {
                        table.inverted.get(&(*field, *a)).map_or(&[][..], |v| v)
                    })))
                }
                Compiled::Token {
                    field,
                    not: false,
                    values,
                } if ty.fields[*field as usize].inverted
                    && values.iter().all(|(_, code)| code.is_some()) =>
                {
                    Some(union(values.iter().map(|(_, code)| {
                        code.and_then(|c| table.inverted.get(&(*field, c)))
                            .map_or(&[][..], |v| v)
                    })))
                }
                _ => None,
            };
            if let Some(mut candidates) = candidates
                && best.as_ref().is_none_or(|b| candidates.len() < b.len())
            {
                candidates.sort_unstable();
                candidates.dedup();
                best = Some(candidates);
            }
        }
        let check = |s: &u32| {
            let slot = &table.slots[*s as usize];
            slot.is_live() && compiled.iter().all(|c| self.test(slot, c))
        };
        match best {
            Some(candidates) => candidates.into_iter().filter(check).collect(),
            None => (0..table.slots.len() as u32).filter(check).collect(),
        }
    }

    pub(super) fn test(&self, slot: &Slot, c: &Compiled<'_>) -> bool {
        match c {
            Compiled::Id(ids) => ids.iter().any(|id| **id == *slot.id),
            Compiled::LastUpdated(values) => {
                let v = slot.current();
                let target = DateRange {
                    start: v.last_updated_ms,
                    end: v.last_updated_ms + 1,
                };
                values.iter().any(|(p, r)| r.matches(*p, &target))
            }
            Compiled::Missing {
                field,
                targets,
                missing,
            } => {
                let present = slot.index.iter().any(|e| match e {
                    Entry::Ref { field: f, atom } if f == field => {
                        targets.is_empty() || {
                            let target = self.atoms.resolve(*atom);
                            targets.iter().any(|t| {
                                target
                                    .strip_prefix(t)
                                    .is_some_and(|rest| rest.starts_with('/'))
                            })
                        }
                    }
                    e => e.field() == *field && !matches!(e, Entry::Ref { .. }),
                });
                present != *missing
            }
            Compiled::Ref { field, atoms } => slot.index.iter().any(|e| {
                matches!(e, Entry::Ref { field: f, atom } if f == field && atoms.contains(atom))
            }),
            Compiled::Token { field, not, values } => {
                let hit = slot.index.iter().any(|e| match e {
                    Entry::Token {
                        field: f,
                        system,
                        code,
                    } if f == field => values.iter().any(|(want_system, want_code)| {
                        want_system.is_none_or(|s| s == *system)
                            && want_code.is_none_or(|c| c == *code)
                    }),
                    _ => false,
                });
                hit != *not
            }
            Compiled::Date { field, values } => slot.index.iter().any(|e| match e {
                Entry::Date {
                    field: f,
                    start,
                    end,
                } if f == field => {
                    let target = DateRange {
                        start: *start,
                        end: *end,
                    };
                    values.iter().any(|(p, r)| r.matches(*p, &target))
                }
                _ => false,
            }),
            Compiled::Str {
                field,
                mode,
                values,
            } => slot.index.iter().any(|e| match e {
                Entry::Str { field: f, value } if f == field => {
                    values.iter().any(|want| match mode {
                        StringMatch::Exact => **value == **want,
                        StringMatch::StartsWith => value.to_lowercase().starts_with(want.as_str()),
                        StringMatch::Contains => value.to_lowercase().contains(want.as_str()),
                    })
                }
                _ => false,
            }),
        }
    }

    pub(super) fn sort(&self, ty: &TypeInfo, slots: &mut Vec<u32>, query: &SearchQuery) {
        /// One sort value; `None` (no value) sorts last in either direction.
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        enum Key<'a> {
            Int(i64),
            Str(&'a str),
        }
        let table = &self.tables[ty.index];
        let mut keyed: Vec<(Vec<Option<Key<'_>>>, u32)> = slots
            .iter()
            .map(|&s| {
                let slot = &table.slots[s as usize];
                let keys = query
                    .sort
                    .iter()
                    .map(|k| match k.by {
                        SortBy::Id => Some(Key::Str(&slot.id)),
                        SortBy::LastUpdated => Some(Key::Int(slot.current().last_updated_ms)),
                        SortBy::Date(field) => {
                            let starts = slot.index.iter().filter_map(|e| match e {
                                Entry::Date {
                                    field: f, start, ..
                                } if *f == field => Some(*start),
                                _ => None,
                            });
                            let v = if k.descending {
                                starts.max()
                            } else {
                                starts.min()
                            };
                            v.map(Key::Int)
                        }
                    })
                    .collect();
                (keys, s)
            })
            .collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            for ((x, y), k) in ka.iter().zip(kb).zip(&query.sort) {
                let ord = match (x, y) {
                    (Some(x), Some(y)) if k.descending => y.cmp(x),
                    (Some(x), Some(y)) => x.cmp(y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                };
                if ord != Ordering::Equal {
                    return ord;
                }
            }
            // A stable tiebreak, so that paging over a sorted result never repeats.
            table.slots[*a as usize]
                .id
                .cmp(&table.slots[*b as usize].id)
        });
        *slots = keyed.into_iter().map(|(_, s)| s).collect();
    }

    pub(super) fn includes(
        &self,
        ty: &'static TypeInfo,
        page: &[u32],
        query: &SearchQuery,
    ) -> Vec<StoredResource> {
        let mut seen: HashSet<(usize, u32)> = page.iter().map(|&s| (ty.index, s)).collect();
        let mut frontier: Vec<(&'static TypeInfo, u32)> = page.iter().map(|&s| (ty, s)).collect();
        let mut out = Vec::new();
        let iterate = query
            .include
            .iter()
            .chain(&query.revinclude)
            .any(|s| s.iterate);
        let rounds = if iterate { 4 } else { 1 };
        for round in 0..rounds {
            let active = |spec: &&IncludeSpec| round == 0 || spec.iterate;
            let mut next: Vec<(&'static TypeInfo, u32)> = Vec::new();
            let mut add = |t: &'static TypeInfo, s: u32, next: &mut Vec<_>| {
                if seen.len() < MAX_INCLUDES + page.len()
                    && self.tables[t.index].slots[s as usize].is_live()
                    && seen.insert((t.index, s))
                {
                    next.push((t, s));
                }
            };
            for spec in query.include.iter().filter(active) {
                for &(src_ty, src) in &frontier {
                    if src_ty.index != spec.source.index {
                        continue;
                    }
                    let slot = &self.tables[src_ty.index].slots[src as usize];
                    for e in slot.index.iter() {
                        let Entry::Ref { field, atom } = e else {
                            continue;
                        };
                        if *field != spec.field {
                            continue;
                        }
                        let target = self.atoms.resolve(*atom);
                        let Some((tname, tid)) = target.split_once('/') else {
                            continue;
                        };
                        if !spec.targets.is_empty() && !spec.targets.contains(&tname) {
                            continue;
                        }
                        let Some(tinfo) = search::type_info(tname) else {
                            continue;
                        };
                        if let Some(&s) = self.tables[tinfo.index].by_id.get(tid) {
                            add(tinfo, s, &mut next);
                        }
                    }
                }
            }
            for spec in query.revinclude.iter().filter(active) {
                for &(src_ty, src) in &frontier {
                    if !spec.targets.is_empty() && !spec.targets.contains(&src_ty.name) {
                        continue;
                    }
                    let slot = &self.tables[src_ty.index].slots[src as usize];
                    let Some(atom) = self.atoms.get(&format!("{}/{}", src_ty.name, slot.id)) else {
                        continue;
                    };
                    if let Some(list) = self.tables[spec.source.index]
                        .inverted
                        .get(&(spec.field, atom))
                    {
                        for &s in list {
                            add(spec.source, s, &mut next);
                        }
                    }
                }
            }
            out.extend(next.iter().copied());
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        out.into_iter()
            .map(|(t, s)| {
                let slot = &self.tables[t.index].slots[s as usize];
                self.export(t, slot, slot.current())
            })
            .collect()
    }
}
/// The sorted union of sorted posting lists.
pub(super) fn union<'a>(lists: impl Iterator<Item = &'a [u32]>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for list in lists {
        out.extend_from_slice(list);
    }
    out.sort_unstable();
    out.dedup();
    out
}
