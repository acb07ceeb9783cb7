//! Transactions: several writes checked and stored under one lock, all or nothing,
//! with `urn:uuid:` references resolved to the ids the creates got.

use super::*;

/// One write of a [`Store::transaction`].
#[derive(Debug, Clone)]
pub enum TxOp {
    /// A create with a server-assigned `id`; `full_url` (`urn:uuid:...`) is how other
    /// entries refer to it; `condition` is its `If-None-Exist`.
    Create {
        ty: &'static TypeInfo,
        id: String,
        full_url: Option<String>,
        resource: Value,
        condition: Option<SearchQuery>,
    },
    Update {
        ty: &'static TypeInfo,
        id: String,
        resource: Value,
        if_match: Option<u32>,
    },
    Delete {
        ty: &'static TypeInfo,
        id: String,
        if_match: Option<u32>,
    },
}

/// What one [`TxOp`] did.
#[derive(Debug, Clone)]
pub enum TxOutcome {
    Created(StoredResource),
    /// A conditional create matched this resource.
    Existing(StoredResource),
    /// The new version, and whether the update created the resource.
    Updated(StoredResource, bool),
    /// The deletion version; `None` when there was nothing to delete.
    Deleted(Option<StoredResource>),
}

/// Replaces every `reference` that is a key of `urls` with its value.
fn rewrite_references(value: &mut Value, urls: &HashMap<String, String>) {
    if urls.is_empty() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if key == "reference"
                    && let Value::String(s) = child
                    && let Some(target) = urls.get(s.as_str())
                {
                    *s = target.clone();
                } else {
                    rewrite_references(child, urls);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, urls)),
        _ => {}
    }
}

impl Store {
    /// Applies `ops` atomically: every check (`If-Match`, `If-None-Exist`) is made first,
    /// under one write lock, and only if all pass are the writes made; otherwise nothing
    /// is written and the index of the failing op is returned with its error.
    ///
    /// `urn:uuid:`/`urn:oid:` references (the `full_url` of a create) are rewritten to
    /// the `Type/id` each create resolved to. The ops must touch distinct resources.
    pub fn transaction(&self, ops: Vec<TxOp>) -> Result<Vec<TxOutcome>, (usize, StoreError)> {
        let mut inner = self.inner.write();
        // Phase 1: checks, and what each create resolves to.
        let mut resolved: Vec<Option<StoredResource>> = Vec::with_capacity(ops.len());
        let mut urls: HashMap<String, String> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let mut existing = None;
            match op {
                TxOp::Create {
                    ty,
                    id,
                    full_url,
                    condition,
                    ..
                } => {
                    let mut target = format!("{}/{id}", ty.name);
                    if let Some(query) = condition {
                        match inner.matching(ty, &query.criteria).as_slice() {
                            [] => {}
                            [slot] => {
                                let slot = &inner.tables[ty.index].slots[*slot as usize];
                                let found = inner.export(ty, slot, slot.current());
                                target = found.relative();
                                existing = Some(found);
                            }
                            more => return Err((i, StoreError::MultipleMatches(more.len()))),
                        }
                    }
                    if let Some(url) = full_url {
                        urls.insert(url.clone(), target);
                    }
                }
                TxOp::Update {
                    ty, id, if_match, ..
                }
                | TxOp::Delete { ty, id, if_match } => {
                    if let Some(expected) = if_match {
                        let current = inner
                            .slot(ty, id)
                            .ok()
                            .filter(|s| s.is_live())
                            .map(|s| s.current().number);
                        if current != Some(*expected) {
                            return Err((
                                i,
                                StoreError::VersionMismatch {
                                    expected: *expected,
                                    current: current
                                        .map_or_else(|| "none".to_owned(), |n| n.to_string()),
                                },
                            ));
                        }
                    }
                }
            }
            resolved.push(existing);
        }
        // Phase 2: prepare every body and run the business rules on each write, in order,
        // each seeing the writes before it (nothing is written yet, so failures still
        // abort).
        let now = now_ms();
        let mut prepared = Vec::with_capacity(ops.len());
        let mut extras = Vec::with_capacity(ops.len());
        let mut overlay = Overlay {
            inner: &inner,
            pending: HashMap::new(),
        };
        let mut bumps: HashMap<(&'static str, String), u32> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            let (p, extra) = match op {
                TxOp::Create {
                    ty, id, resource, ..
                } if resolved[i].is_none() => {
                    let mut resource = resource.clone();
                    rewrite_references(&mut resource, &urls);
                    bumps.insert((ty.name, id.clone()), 1);
                    let extra = inner
                        .rule_writes(&overlay, ty, None, Some(&resource), now, &mut bumps)
                        .map_err(|e| (i, e))?;
                    let p = prepare(ty, id, 1, now, &mut resource).map_err(|e| (i, e))?;
                    overlay
                        .pending
                        .insert((ty.name, id.clone()), Some(resource));
                    (Some(p), extra)
                }
                TxOp::Update {
                    ty, id, resource, ..
                } => {
                    let mut resource = resource.clone();
                    rewrite_references(&mut resource, &urls);
                    let old = rules::View::current(&overlay, ty.name, id);
                    labels::carry_forward(old.as_ref(), &mut resource);
                    let next = inner.bumped_version(ty, id, &mut bumps);
                    let extra = inner
                        .rule_writes(&overlay, ty, old.as_ref(), Some(&resource), now, &mut bumps)
                        .map_err(|e| (i, e))?;
                    let p = prepare(ty, id, next, now, &mut resource).map_err(|e| (i, e))?;
                    overlay
                        .pending
                        .insert((ty.name, id.clone()), Some(resource));
                    (Some(p), extra)
                }
                TxOp::Delete { ty, id, .. } => {
                    let old = rules::View::current(&overlay, ty.name, id);
                    let extra = match old {
                        Some(old) => {
                            inner.bumped_version(ty, id, &mut bumps);
                            inner
                                .rule_writes(&overlay, ty, Some(&old), None, now, &mut bumps)
                                .map_err(|e| (i, e))?
                        }
                        None => Vec::new(),
                    };
                    overlay.pending.insert((ty.name, id.clone()), None);
                    (None, extra)
                }
                TxOp::Create { .. } => (None, Vec::new()),
            };
            for w in &extra {
                let value = serde_json::from_slice(&w.prepared.body).ok();
                overlay.pending.insert((w.ty.name, w.id.clone()), value);
            }
            prepared.push(p);
            extras.push(extra);
        }
        drop(overlay);
        // Phase 3: write, each op followed by the writes its rules added.
        let mut out = Vec::with_capacity(ops.len());
        for (((op, existing), p), extra) in ops.iter().zip(resolved).zip(prepared).zip(extras) {
            let outcome = match op {
                TxOp::Create { ty, id, .. } => match existing {
                    Some(found) => TxOutcome::Existing(found),
                    None => TxOutcome::Created(inner.write_version(ty, id, p, now, Method::Create)),
                },
                TxOp::Update { ty, id, .. } => {
                    let created = !inner.slot(ty, id).is_ok_and(Slot::is_live);
                    let method = if created {
                        Method::Create
                    } else {
                        Method::Update
                    };
                    TxOutcome::Updated(inner.write_version(ty, id, p, now, method), created)
                }
                TxOp::Delete { ty, id, .. } => {
                    if inner.slot(ty, id).is_ok_and(Slot::is_live) {
                        TxOutcome::Deleted(Some(inner.write_version(
                            ty,
                            id,
                            None,
                            now,
                            Method::Delete,
                        )))
                    } else {
                        TxOutcome::Deleted(None)
                    }
                }
            };
            inner.store_rule_writes(extra, now);
            out.push(outcome);
        }
        Ok(out)
    }
}
