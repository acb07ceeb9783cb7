//! The audit trail behind the [`AuditSink`] port: every access decision, one JSON object
//! per line, written by one owner.
//!
//! Records name who asked (subject, client), for which patient compartment, what
//! interaction on which type, the decision and its reason, the upstream status and the
//! gateway instance; never resource bodies, names or tokens, and never into the
//! application log.
//!
//! How it works: [`AuditTrail::record`] stamps the instance, serializes the record (and,
//! with the `fhir` sink, its AuditEvent) on the caller's task, and sends it over a bounded
//! channel to **one writer** (`writer.rs`, a thread of its own) together with a oneshot for the
//! acknowledgement. The writer takes everything queued as one batch, writes it to every
//! local target with one `write` each, `fdatasync`s once per target and batch in
//! `synced` mode (group commit), and then answers. In `written` mode a record that finds
//! the writer idle is written by the caller's task instead, with one `write` that cannot
//! block for long (`writer::write_now`): no hand-off, no wake-up. Every other file
//! operation runs on the writer's thread, and no lock is held across an await. A full
//! queue makes `record` wait (backpressure), it never drops.
//!
//! What is safe when `record` returns `Ok` (so when a response leaves, or a write goes
//! to the EHR), per [`Durability`]:
//! - `written` (default): in the operating system (survives a crash of the gateway);
//!   `fdatasync`ed within about [`SYNC_INTERVAL`] (one second) after that;
//! - `synced`: on disk (survives a power loss);
//! - `async`: only queued; what is queued and not yet written when the process dies is
//!   lost (at most the queue's [`QUEUE_CAPACITY`] records).
//!
//! When the trail cannot be written ([`OnFailure`]): `refuse` (default) makes `record`
//! return `Err` (the request is refused); `continue` logs, counts and returns `Ok`.
//!
//! The parts: `config.rs` (the `[audit]` section), `writer.rs` (the writer task),
//! `file.rs` (the file sink: rotation, reopen, retention), `stdout.rs`, `fhir.rs`
//! (AuditEvents and their delivery), `spool.rs` (the FHIR sink's local spool).

pub mod config;
mod fhir;
mod file;
mod spool;
mod stdout;
mod writer;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use portico_access::audit::{AuditError, AuditRecord, AuditSink};
use portico_upstream::TokenProvider;
use tokio::sync::{mpsc, oneshot, watch};

pub use config::{AuditConfig, Durability, FhirAuthKind, FhirSinkConfig, OnFailure, SinkKind};
pub use writer::SYNC_INTERVAL;

use spool::SpoolShared;
use stdout::StdoutSink;
use writer::{Command, Pending, Writer};

/// How many records may wait for the writer; beyond it `record` waits for room.
pub const QUEUE_CAPACITY: usize = 8192;

/// The trail's counters, shared by the writer, the delivery task and `record`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    records_written: AtomicU64,
    batches: AtomicU64,
    fsyncs: AtomicU64,
    failures: AtomicU64,
    rotations: AtomicU64,
    files_deleted: AtomicU64,
    spool_overflows: AtomicU64,
    fhir_delivered: AtomicU64,
    fhir_failed_attempts: AtomicU64,
    fhir_rejected: AtomicU64,
}

/// A snapshot of the audit trail's figures, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records written to every configured local target.
    pub records_written: u64,
    /// Batches the writer wrote (each one `write` per target).
    pub batches: u64,
    /// `fdatasync` calls (per batch in `synced` mode; per tick otherwise; at rotation).
    pub fsyncs: u64,
    /// Records that could not be written (refused, or lost with `continue`).
    pub failures: u64,
    /// Records waiting for the writer now.
    pub queue_depth: u64,
    /// The file's rotations.
    pub rotations: u64,
    /// Rotated files deleted to stay under `max_total_bytes`.
    pub files_deleted: u64,
    /// Bytes of AuditEvents spooled and not yet delivered.
    pub spool_bytes: u64,
    /// AuditEvents that did not fit in the spool.
    pub spool_overflows: u64,
    /// AuditEvents the repository accepted.
    pub fhir_delivered: u64,
    /// POSTs of AuditEvents that failed and will be retried.
    pub fhir_failed_attempts: u64,
    /// AuditEvents the repository refused for good (kept in `rejected.ndjson`).
    pub fhir_rejected: u64,
}

/// The gateway's audit sink: a cheap handle to the writer task (and the AuditEvent
/// delivery task). Build it with [`AuditTrail::start`] inside a tokio runtime; end it
/// with [`AuditTrail::close`], which drains the queue and syncs.
#[derive(Clone)]
pub struct AuditTrail {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    writer: writer::Shared,
    instance: String,
    durability: Durability,
    on_failure: OnFailure,
    fhir: bool,
    counters: Arc<Counters>,
    healthy: Arc<AtomicBool>,
    spool: Option<Arc<SpoolShared>>,
    delivery: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail")
            .field("instance", &self.inner.instance)
            .field("durability", &self.inner.durability)
            .field("on_failure", &self.inner.on_failure)
            .finish_non_exhaustive()
    }
}

impl AuditTrail {
    /// Opens the configured sinks and starts the writer task (and, with the `fhir` sink,
    /// the delivery task). `upstream` is the gateway's own EHR credential, for
    /// `[audit.fhir] auth = "upstream"`. Must run inside a tokio runtime.
    pub fn start(
        config: &AuditConfig,
        upstream: Option<TokenProvider>,
    ) -> anyhow::Result<AuditTrail> {
        let stdout = config.has(SinkKind::Stdout).then(StdoutSink::stdout);
        Self::start_with(config, upstream, stdout)
    }

    fn start_with(
        config: &AuditConfig,
        upstream: Option<TokenProvider>,
        stdout: Option<StdoutSink>,
    ) -> anyhow::Result<AuditTrail> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| anyhow::anyhow!("the audit trail needs a tokio runtime"))?;
        let counters = Arc::new(Counters::default());
        let synced = config.durability == Durability::Synced;
        let file = if config.has(SinkKind::File) {
            let limits = file::Limits {
                max_file_bytes: config.max_file_bytes,
                rotate_seconds: config.rotate_seconds,
                max_total_bytes: config.max_total_bytes,
                sync_dir: synced,
            };
            Some(
                file::RotatingFile::open(&config.path, limits, counters.clone()).map_err(|e| {
                    anyhow::anyhow!("cannot open the audit log {}: {e}", config.path.display())
                })?,
            )
        } else {
            None
        };
        let (spool, delivery) = match (&config.fhir, config.has(SinkKind::Fhir)) {
            (Some(fhir), true) => {
                let (spool, reader) = spool::open(
                    &fhir.spool_dir,
                    fhir.max_spool_bytes,
                    synced,
                    counters.clone(),
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the audit spool {}: {e}",
                        fhir.spool_dir.display()
                    )
                })?;
                let auth = fhir::Auth::from_config(fhir, upstream).map_err(anyhow::Error::msg)?;
                let delivery = fhir::Delivery::new(reader, fhir, auth, counters.clone())?;
                (Some(spool), Some(delivery))
            }
            (None, true) => anyhow::bail!("config key `audit.fhir`: required by the fhir sink"),
            _ => (None, None),
        };
        let healthy = Arc::new(AtomicBool::new(true));
        let (stop_tx, stop_rx) = watch::channel(false);
        let spool_shared = spool.as_ref().map(|s| s.shared().clone());
        let writer = Writer {
            file,
            stdout,
            spool,
            durability: config.durability,
            counters: counters.clone(),
            healthy: healthy.clone(),
            stop_delivery: Some(stop_tx),
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let writer = writer::start(&runtime, rx, tx.clone(), writer)?;
        let delivery = delivery.map(|d| runtime.spawn(d.run(stop_rx)));
        let instance = config.resolve_instance();
        tracing::info!(
            instance = %instance,
            sinks = ?config.sinks.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            durability = config.durability.as_str(),
            "audit trail started"
        );
        Ok(AuditTrail {
            inner: Arc::new(Inner {
                tx,
                writer,
                instance,
                durability: config.durability,
                on_failure: config.on_failure,
                fhir: spool_shared.is_some(),
                counters,
                healthy,
                spool: spool_shared,
                delivery: std::sync::Mutex::new(delivery),
            }),
        })
    }

    /// The instance id stamped into every record.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The current figures.
    /// Whether the trail can take records now: its last batch was written, or a failure
    /// is only counted (`on_failure = "continue"`). A trail that refuses makes this
    /// replica unable to answer patient data (see `/readyz`).
    pub fn can_record(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
            || matches!(self.inner.on_failure, OnFailure::Continue)
    }

    pub fn stats(&self) -> AuditStats {
        let c = &self.inner.counters;
        let tx = &self.inner.tx;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AuditStats {
            records_written: load(&c.records_written),
            batches: load(&c.batches),
            fsyncs: load(&c.fsyncs),
            failures: load(&c.failures),
            queue_depth: (tx.max_capacity() - tx.capacity()) as u64,
            rotations: load(&c.rotations),
            files_deleted: load(&c.files_deleted),
            spool_bytes: self.inner.spool.as_ref().map_or(0, |s| s.pending_bytes()),
            spool_overflows: load(&c.spool_overflows),
            fhir_delivered: load(&c.fhir_delivered),
            fhir_failed_attempts: load(&c.fhir_failed_attempts),
            fhir_rejected: load(&c.fhir_rejected),
        }
    }

    /// Closes the file and opens `path` again, after the records queued before (what
    /// SIGHUP does, for an external logrotate that moved the file away).
    pub async fn reopen(&self) -> Result<(), AuditError> {
        let (done, answer) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Reopen(done))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// Writes and syncs everything queued, stops the writer and the delivery task, and
    /// returns when they have ended. Records after this fail. Undelivered AuditEvents
    /// stay in the spool for the next start.
    pub async fn close(&self) {
        let (done, finished) = oneshot::channel();
        if self.inner.tx.send(Command::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
        let delivery = self
            .inner
            .delivery
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = delivery {
            let _ = task.await;
        }
    }

    /// Whether the writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.inner.tx.is_closed()
    }

    /// The failure policy applied to an error.
    fn on_failure(&self, error: AuditError) -> Result<(), AuditError> {
        match self.inner.on_failure {
            OnFailure::Refuse => Err(error),
            OnFailure::Continue => Ok(()),
        }
    }

    fn writer_gone(&self) -> Result<(), AuditError> {
        self.inner.counters.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("an audit record could not be written: the audit writer has stopped");
        self.on_failure(stopped())
    }
}

fn stopped() -> AuditError {
    AuditError("the audit writer has stopped".to_owned())
}

#[async_trait]
impl AuditSink for AuditTrail {
    async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let inner = &self.inner;
        let mut stamped = record.clone();
        stamped.instance = Some(inner.instance.clone());
        let mut line = serde_json::to_vec(&stamped).map_err(|e| AuditError(e.to_string()))?;
        line.push(b'\n');
        let event = if inner.fhir {
            let mut event = serde_json::to_vec(&fhir::audit_event(&stamped, &inner.instance))
                .map_err(|e| AuditError(e.to_string()))?;
            event.push(b'\n');
            Some(event)
        } else {
            None
        };
        if inner.durability == Durability::Async {
            let healthy = inner.healthy.load(Ordering::Relaxed);
            let pending = Pending {
                line,
                event,
                ack: None,
            };
            if inner.tx.send(Command::Record(pending)).await.is_err() {
                return self.writer_gone();
            }
            return if healthy {
                Ok(())
            } else {
                self.on_failure(AuditError(
                    "the audit trail could not be written (last batch failed)".to_owned(),
                ))
            };
        }
        if inner.durability == Durability::Written
            && let Some(result) = writer::write_now(&inner.writer, &line, event.as_deref())
        {
            return match result {
                Ok(()) => Ok(()),
                // Counted and logged as by the writer's thread.
                Err(e) => self.on_failure(e),
            };
        }
        let (ack, safe) = oneshot::channel();
        let pending = Pending {
            line,
            event,
            ack: Some(ack),
        };
        if inner.tx.send(Command::Record(pending)).await.is_err() {
            return self.writer_gone();
        }
        match safe.await {
            Ok(Ok(())) => Ok(()),
            // Counted and logged by the writer.
            Ok(Err(e)) => self.on_failure(e),
            Err(_) => self.writer_gone(),
        }
    }
}

/// Reopens the audit log on every SIGHUP (for an external logrotate: move the file,
/// send SIGHUP, the writer opens `path` afresh). Does nothing off Unix.
pub fn reopen_on_sighup(trail: AuditTrail) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        if trail.is_closed() {
                            break;
                        }
                        tracing::info!("SIGHUP: reopening the audit log");
                        // Failures are logged by the writer.
                        let _ = trail.reopen().await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; the audit log will not be reopened on it");
            }
        }
    }
    #[cfg(not(unix))]
    drop(trail);
}
