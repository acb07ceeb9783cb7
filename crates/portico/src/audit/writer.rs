//! The one writer: a tokio task that owns every local target (the file, standard
//! output, the FHIR spool) and writes what `record` queues, in batches.
//!
//! The loop:
//! 1. wait for a command, or for the sync tick (every [`SYNC_INTERVAL`]);
//! 2. take that command and everything else already queued: that is the batch;
//! 3. on a blocking thread (never on a tokio worker), write the batch's records to each
//!    target with one `write` (the file splits it only where a size rotation falls);
//!    in `synced` mode `fdatasync` each written target once; then publish the spooled
//!    events to the delivery task and answer every record's acknowledgement: `Ok` once
//!    its bytes are as safe as the mode promises, or the error;
//! 4. a reopen (SIGHUP) takes effect after the records queued before it; a close drains
//!    the queue, syncs every target, stops the delivery task and ends the loop.
//!
//! The tick `fdatasync`s targets written since their last sync (`written` and `async`
//! modes), and rotates the file when its period is over, so an idle gateway still
//! rotates at midnight.
//!
//! Failures are per batch: a target that cannot be written fails every record of the
//! batch (counted, logged once per batch without record contents); an event that does
//! not fit in the spool fails its own record. The next batch tries again (the file is
//! reopened), so the trail heals when the disk does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use portico_access::audit::AuditError;
use tokio::sync::{mpsc, oneshot, watch};

use super::Counters;
use super::config::Durability;
use super::file::RotatingFile;
use super::spool::SpoolWriter;
use super::stdout::StdoutSink;

/// How often written-but-unsynced data is `fdatasync`ed in `written` and `async` modes,
/// and how often a time rotation is looked for.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// One record on its way: its JSON line, its AuditEvent (with the `fhir` sink), and
/// where to say that it is safe (`None` in `async` mode).
#[derive(Debug)]
pub(crate) struct Pending {
    pub line: Vec<u8>,
    pub event: Option<Vec<u8>>,
    pub ack: Option<oneshot::Sender<Result<(), AuditError>>>,
}

#[derive(Debug)]
pub(crate) enum Command {
    Record(Pending),
    /// Close and reopen the file at its path (SIGHUP).
    Reopen(oneshot::Sender<Result<(), AuditError>>),
    /// Drain, sync and stop.
    Close(oneshot::Sender<()>),
}

/// Everything the writer owns.
#[derive(Debug)]
pub(crate) struct Writer {
    pub file: Option<RotatingFile>,
    pub stdout: Option<StdoutSink>,
    pub spool: Option<SpoolWriter>,
    pub durability: Durability,
    pub counters: Arc<Counters>,
    /// False while the last batch failed (what `async` mode's `refuse` looks at).
    pub healthy: Arc<AtomicBool>,
    /// Tells the delivery task to stop when the writer ends.
    pub stop_delivery: Option<watch::Sender<bool>>,
}

/// Runs `f` on the writer on a blocking thread and hands the writer back; `None` if it
/// panicked (the writer is then gone, and so is the trail: records fail).
async fn blocking<T: Send + 'static>(
    mut writer: Writer,
    f: impl FnOnce(&mut Writer) -> T + Send + 'static,
) -> Option<(Writer, T)> {
    match tokio::task::spawn_blocking(move || {
        let out = f(&mut writer);
        (writer, out)
    })
    .await
    {
        Ok(pair) => Some(pair),
        Err(e) => {
            tracing::error!(error = %e, "the audit writer failed; audit records can no longer be written");
            None
        }
    }
}

/// The writer's loop, until closed or until every sender is gone.
pub(crate) async fn run(mut rx: mpsc::Receiver<Command>, writer: Writer) {
    let mut writer = writer;
    let mut tick = tokio::time::interval(SYNC_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closers = Vec::new();
    loop {
        let first = tokio::select! {
            command = rx.recv() => command,
            _ = tick.tick() => {
                if writer.tick_due(SystemTime::now()) {
                    match blocking(writer, |w| w.tick(SystemTime::now())).await {
                        Some((w, ())) => writer = w,
                        None => return,
                    }
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while let Ok(command) = rx.try_recv() {
            batch.push(command);
        }
        if batch.iter().any(|c| matches!(c, Command::Close(_))) {
            // Nothing new is accepted; what is already queued is written.
            rx.close();
            while let Some(command) = rx.recv().await {
                batch.push(command);
            }
        }
        match blocking(writer, move |w| w.process(batch)).await {
            Some((w, mut closing)) => {
                writer = w;
                if !closing.is_empty() {
                    closers.append(&mut closing);
                    break;
                }
            }
            None => return,
        }
    }
    if let Some((w, ())) = blocking(writer, Writer::finish).await {
        writer = w;
        if let Some(stop) = writer.stop_delivery.take() {
            let _ = stop.send(true);
        }
    }
    for done in closers {
        let _ = done.send(());
    }
}

impl Writer {
    fn tick_due(&self, now: SystemTime) -> bool {
        self.file
            .as_ref()
            .is_some_and(|f| f.is_dirty() || f.rotation_due(now))
            || self.spool.as_ref().is_some_and(SpoolWriter::is_dirty)
    }

    /// The periodic work: rotation by time and the bounded-delay sync.
    fn tick(&mut self, now: SystemTime) {
        if let Some(file) = &mut self.file {
            if let Err(e) = file.rotate_if_due(now) {
                tracing::error!(path = %file.path().display(), error = %e, "cannot rotate the audit log");
            }
            if let Err(e) = file.sync() {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(path = %file.path().display(), error = %e, "cannot sync the audit log");
            }
        }
        if let Some(spool) = &mut self.spool
            && let Err(e) = spool.sync()
        {
            self.healthy.store(false, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot sync the audit spool");
        }
    }

    /// Writes a batch; returns the close requests it held.
    fn process(&mut self, batch: Vec<Command>) -> Vec<oneshot::Sender<()>> {
        let mut records = Vec::new();
        let mut closers = Vec::new();
        for command in batch {
            match command {
                Command::Record(pending) => records.push(pending),
                Command::Reopen(done) => {
                    self.commit(std::mem::take(&mut records));
                    let _ = done.send(self.reopen());
                }
                Command::Close(done) => closers.push(done),
            }
        }
        self.commit(records);
        closers
    }

    fn reopen(&mut self) -> Result<(), AuditError> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        match file.reopen(SystemTime::now()) {
            Ok(()) => {
                tracing::info!(path = %file.path().display(), "audit log reopened");
                Ok(())
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(path = %file.path().display(), error = %e, "cannot reopen the audit log");
                Err(AuditError(format!("cannot reopen the audit log: {e}")))
            }
        }
    }

    /// Writes `records` to every target, syncs per the durability, answers each.
    fn commit(&mut self, records: Vec<Pending>) {
        if records.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let mut errors: Vec<String> = Vec::new();
        let lines: Vec<&[u8]> = records.iter().map(|r| r.line.as_slice()).collect();
        if let Some(file) = &mut self.file
            && let Err(e) = file.append(&lines, now)
        {
            errors.push(format!("audit log {}: {e}", file.path().display()));
        }
        if let Some(out) = &mut self.stdout
            && let Err(e) = out.append(&lines.concat())
        {
            errors.push(format!("standard output: {e}"));
        }
        let mut spooled = vec![true; records.len()];
        if let Some(spool) = &mut self.spool {
            let events: Vec<Option<&[u8]>> = records.iter().map(|r| r.event.as_deref()).collect();
            match spool.append(&events) {
                Ok(accepted) => spooled = accepted,
                Err(e) => errors.push(format!("audit spool: {e}")),
            }
        }
        if self.durability == Durability::Synced {
            if let Some(file) = &mut self.file
                && let Err(e) = file.sync()
            {
                errors.push(format!(
                    "audit log {}: fdatasync: {e}",
                    file.path().display()
                ));
            }
            if let Some(spool) = &mut self.spool
                && let Err(e) = spool.sync()
            {
                errors.push(format!("audit spool: fdatasync: {e}"));
            }
        }
        // Spooled first, then sent: the delivery task sees the events only now.
        if let Some(spool) = &self.spool {
            spool.publish();
        }

        let n = records.len() as u64;
        let overflowed = spooled.iter().filter(|ok| !**ok).count() as u64;
        let batch_failed = !errors.is_empty();
        let failed = if batch_failed { n } else { overflowed };
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.records_written.fetch_add(n - failed, Ordering::Relaxed);
        c.failures.fetch_add(failed, Ordering::Relaxed);
        c.spool_overflows.fetch_add(overflowed, Ordering::Relaxed);
        self.healthy.store(failed == 0, Ordering::Relaxed);
        if batch_failed {
            tracing::error!(
                records = n,
                error = %errors.join("; "),
                "audit records could not be written"
            );
        }
        if overflowed > 0 {
            tracing::error!(
                events = overflowed,
                "the audit spool is full (audit.fhir.max_spool_bytes): AuditEvents not spooled"
            );
        }
        let reason = errors.join("; ");
        for (record, spooled) in records.into_iter().zip(spooled) {
            let result = if batch_failed {
                Err(AuditError(format!(
                    "the audit trail cannot be written: {reason}"
                )))
            } else if !spooled {
                Err(AuditError("the audit spool is full".to_owned()))
            } else {
                Ok(())
            };
            if let Some(ack) = record.ack {
                let _ = ack.send(result);
            }
        }
    }

    /// Syncs every target: the last thing the writer does.
    fn finish(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.sync()
        {
            tracing::error!(path = %file.path().display(), error = %e, "cannot sync the audit log at shutdown");
        }
        if let Some(spool) = &mut self.spool {
            if let Err(e) = spool.sync() {
                tracing::error!(error = %e, "cannot sync the audit spool at shutdown");
            }
            spool.publish();
        }
    }
}
