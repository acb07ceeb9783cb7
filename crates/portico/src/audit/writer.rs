//! The one writer: it owns every local target (the file, standard output, the FHIR spool)
//! behind one mutex, and a thread of its own writes what `record` queues, in batches.
//!
//! In `written` mode a record whose request finds the writer idle (the mutex free; only
//! tried, never waited for) is written by that request's task with one `write`
//! ([`write_now`]), when that write cannot block for long: no standard output, no
//! rotation, no new spool segment (each of those syncs or may wait on a pipe). Under load
//! the hand-off to the thread and its wake-up back cost more than that `write`.
//!
//! The loop:
//! 1. wait for a command (a record, a reopen, a close, or the tick a small tokio task
//!    sends every [`SYNC_INTERVAL`]): for [`SPIN`] looking for one, then asleep;
//! 2. take that command and everything else already queued: that is the batch;
//! 3. write the batch's records to each target with one `write` (the file splits it
//!    only where a size rotation falls); in `synced` mode `fdatasync` each written target
//!    once; then publish the spooled events to the delivery task and answer every
//!    record's acknowledgement: `Ok` once its bytes are as safe as the mode promises, or
//!    the error;
//! 4. a reopen (SIGHUP) takes effect after the records queued before it; a close drains
//!    the queue, syncs every target, stops the delivery task and ends the loop.
//!
//! The thread is the writer's alone, so a batch costs one wake-up and no hand-off to
//! tokio's blocking pool; the only I/O on a tokio worker is [`write_now`]'s one `write`
//! into the page cache.
//!
//! The tick `fdatasync`s targets written since their last sync (`written` and `async`
//! modes), and rotates the file when its period is over, so an idle gateway still
//! rotates at midnight.
//!
//! Failures are per batch: a target that cannot be written fails every record of the
//! batch (counted, logged once per batch without record contents); an event that does
//! not fit in the spool fails its own record. The next batch tries again (the file is
//! reopened), so the trail heals when the disk does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The periodic sync and time rotation.
    Tick,
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

/// The writer, shared by its thread and (in `written` mode) the requests that find it
/// idle; `None` once it has closed.
pub(crate) type Shared = Arc<Mutex<Option<Writer>>>;

/// Starts the writer's thread, and the task that sends it a [`Command::Tick`] every
/// [`SYNC_INTERVAL`] (it ends when the writer or every sender of the trail does).
pub(crate) fn start(
    runtime: &tokio::runtime::Handle,
    rx: mpsc::Receiver<Command>,
    tx: mpsc::Sender<Command>,
    writer: Writer,
) -> std::io::Result<Shared> {
    let shared: Shared = Arc::new(Mutex::new(Some(writer)));
    let thread_shared = shared.clone();
    std::thread::Builder::new()
        .name("portico-audit".to_owned())
        .spawn(move || run(rx, &thread_shared))?;
    // Weak: the ticks do not keep the writer alive once the trail's senders are gone.
    let tx = tx.downgrade();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(tx) = tx.upgrade() else { break };
            if tx.send(Command::Tick).await.is_err() {
                break;
            }
        }
    });
    Ok(shared)
}

/// Writes one record on the caller's thread if the writer is idle (nobody holds it) and
/// the write cannot block for long ([`Writer::can_write_now`]): `Some` with its answer.
/// `None`: busy, closed, or not a write to make here; queue the record instead (a closed
/// writer's queue refuses it). The lock is only tried, never waited for, so a tokio
/// worker never blocks on it.
pub(crate) fn write_now(
    shared: &Shared,
    line: &[u8],
    event: Option<&[u8]>,
) -> Option<Result<(), AuditError>> {
    let mut guard = shared.try_lock().ok()?;
    let writer = guard.as_mut()?;
    let now = SystemTime::now();
    if !writer.can_write_now(line.len(), now) {
        return None;
    }
    Some(writer.write(&[line], &[event], now).result(0))
}

/// The writer's loop, until closed or until every sender is gone. A panic ends the
/// thread and drops the queue: every record after it fails, and so does `/readyz`.
fn run(mut rx: mpsc::Receiver<Command>, shared: &Shared) {
    let mut closers = Vec::new();
    while let Some(first) = next_command(&mut rx) {
        let mut batch = vec![first];
        while let Ok(command) = rx.try_recv() {
            batch.push(command);
        }
        // Woken by one record, the thread would otherwise write batches of one or two
        // under load: one yield lets the requests already running queue theirs too.
        std::thread::yield_now();
        while let Ok(command) = rx.try_recv() {
            batch.push(command);
        }
        if batch.iter().any(|c| matches!(c, Command::Close(_))) {
            // Nothing new is accepted; what is already queued is written.
            rx.close();
            while let Some(command) = rx.blocking_recv() {
                batch.push(command);
            }
        }
        let Ok(mut guard) = shared.lock() else { break };
        let Some(writer) = guard.as_mut() else { break };
        let mut closing = writer.process(batch);
        if !closing.is_empty() {
            closers.append(&mut closing);
            break;
        }
    }
    // Taken out under the lock: a request that looks for the writer after this finds
    // it closed.
    let writer = shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut writer) = writer {
        writer.finish();
        let stop = writer.stop_delivery.take();
        // The files and the spool's lock are released before anyone hears "closed": a
        // trail started right after `close` on the same spool must find it free.
        drop(writer);
        if let Some(stop) = stop {
            let _ = stop.send(true);
        }
    }
    for done in closers {
        let _ = done.send(());
    }
}

/// How long the thread looks for the next command before it sleeps: under load the next
/// record comes sooner, and a thread that does not sleep is not waiting for a core to be
/// woken on when it does (the `written` and `synced` modes' requests wait for it).
const SPIN: Duration = Duration::from_micros(50);

/// The next command: looked for during [`SPIN`], then waited for asleep; `None` once
/// every sender is gone.
fn next_command(rx: &mut mpsc::Receiver<Command>) -> Option<Command> {
    use tokio::sync::mpsc::error::TryRecvError;
    let deadline = std::time::Instant::now() + SPIN;
    loop {
        match rx.try_recv() {
            Ok(command) => return Some(command),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                std::hint::spin_loop();
            }
            Err(TryRecvError::Empty) => return rx.blocking_recv(),
        }
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
        let mut tick = false;
        for command in batch {
            match command {
                Command::Record(pending) => records.push(pending),
                Command::Reopen(done) => {
                    self.commit(std::mem::take(&mut records));
                    let _ = done.send(self.reopen());
                }
                Command::Close(done) => closers.push(done),
                Command::Tick => tick = true,
            }
        }
        self.commit(records);
        if tick {
            let now = SystemTime::now();
            if self.tick_due(now) {
                self.tick(now);
            }
        }
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
        let lines: Vec<&[u8]> = records.iter().map(|r| r.line.as_slice()).collect();
        let events: Vec<Option<&[u8]>> = records.iter().map(|r| r.event.as_deref()).collect();
        let outcome = self.write(&lines, &events, SystemTime::now());
        for (i, record) in records.into_iter().enumerate() {
            if let Some(ack) = record.ack {
                let _ = ack.send(outcome.result(i));
            }
        }
    }

    /// Whether one record of `len` bytes can be written now with nothing that blocks
    /// for long: `written` mode (no `fdatasync` per record), no standard output (a pipe
    /// can be full), no size or time rotation and no new spool segment due (each syncs
    /// the file it closes).
    fn can_write_now(&self, len: usize, now: SystemTime) -> bool {
        self.durability == Durability::Written
            && self.stdout.is_none()
            && self
                .file
                .as_ref()
                .is_none_or(|f| f.can_append_now(len as u64, now))
            && self.spool.as_ref().is_none_or(SpoolWriter::can_append_now)
    }

    /// Writes `lines` (and their `events`) to every target at `now`, syncs per the
    /// durability, counts, and says what happened to each.
    fn write(&mut self, lines: &[&[u8]], events: &[Option<&[u8]>], now: SystemTime) -> Outcome {
        let mut errors: Vec<String> = Vec::new();
        if let Some(file) = &mut self.file
            && let Err(e) = file.append(lines, now)
        {
            errors.push(format!("audit log {}: {e}", file.path().display()));
        }
        if let Some(out) = &mut self.stdout
            && let Err(e) = out.append(&lines.concat())
        {
            errors.push(format!("standard output: {e}"));
        }
        let mut spooled = vec![true; lines.len()];
        if let Some(spool) = &mut self.spool {
            match spool.append(events) {
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

        let n = lines.len() as u64;
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
        Outcome {
            failure: batch_failed.then(|| errors.join("; ")),
            spooled,
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

/// What became of a batch: the reason every record failed, or which were spooled.
struct Outcome {
    failure: Option<String>,
    spooled: Vec<bool>,
}

impl Outcome {
    /// The answer for the batch's `i`-th record.
    fn result(&self, i: usize) -> Result<(), AuditError> {
        if let Some(reason) = &self.failure {
            Err(AuditError(format!(
                "the audit trail cannot be written: {reason}"
            )))
        } else if !self.spooled[i] {
            Err(AuditError("the audit spool is full".to_owned()))
        } else {
            Ok(())
        }
    }
}
