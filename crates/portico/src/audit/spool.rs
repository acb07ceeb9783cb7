//! The FHIR sink's spool: AuditEvents wait here, on local disk, until the audit
//! repository has taken them.
//!
//! The spool is a directory of append-only segment files (`segment-<seq>.ndjson`, one
//! AuditEvent JSON per line) and a cursor file (`delivered`: the segment and byte offset
//! up to which the repository answered 2xx). The writer task appends each batch's events
//! to the active segment with the same discipline as the audit file (one `write`, and an
//! `fdatasync` per batch in `synced` mode) and only then *publishes* the new length: the
//! delivery task never sends an event that is not spooled. A segment is closed (synced)
//! once it holds about an eighth of `max_spool_bytes` (at most 8 MiB) and deleted once
//! every event in it is delivered. On start, the writer opens a fresh segment and the
//! delivery task resumes at the cursor, so what was spooled and not delivered before a
//! restart is sent then.
//!
//! Guarantees and limits:
//! - nothing spooled is dropped while the repository is down: the spool grows, up to
//!   `max_spool_bytes` of undelivered events; an event that does not fit is a failure of
//!   the trail (`on_failure`: `refuse` refuses the request, `continue` drops the event
//!   from the FHIR path only, counted in `portico_audit_spool_overflows_total`);
//! - delivery is at least once: the cursor is rewritten (not synced) after each run of
//!   deliveries, so a crash, a power loss or a shutdown in the middle of a POST can make
//!   the next start send the last few events again;
//! - an event the repository refuses for good (a 4xx other than 401, 403, 408 and 429)
//!   is moved to `rejected.ndjson` in the spool directory and counted, so that one bad
//!   event cannot stop the queue; it is kept there for a person to look at;
//! - a segment whose last line is incomplete (a crash in the middle of a write) has that
//!   line skipped, with a warning;
//! - one process per spool directory: a lock file (`lock`) is held while it runs.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::Counters;

const CURSOR: &str = "delivered";
const LOCK: &str = "lock";
pub(crate) const REJECTED: &str = "rejected.ndjson";
/// How much of a segment one read takes (more when a single line is longer).
const READ_CHUNK: u64 = 1024 * 1024;

fn segment_name(seq: u64) -> String {
    format!("segment-{seq:020}.ndjson")
}

fn parse_segment(name: &str) -> Option<u64> {
    name.strip_prefix("segment-")?
        .strip_suffix(".ndjson")?
        .parse()
        .ok()
}

/// The active segment and how much of it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    seq: u64,
    len: u64,
}

/// What the writer and the delivery task share.
#[derive(Debug)]
pub(crate) struct SpoolShared {
    dir: PathBuf,
    head: Mutex<Head>,
    /// Bytes of events spooled and not yet delivered.
    pending: AtomicU64,
    /// Wakes the delivery task when events are published.
    pub notify: Notify,
    max_bytes: u64,
}

impl SpoolShared {
    fn head(&self) -> Head {
        *self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_head(&self, head: Head) {
        *self
            .head
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = head;
    }

    pub fn pending_bytes(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    fn segment(&self, seq: u64) -> PathBuf {
        self.dir.join(segment_name(seq))
    }

    /// The existing segments, in order, with their sizes.
    fn segments(&self) -> io::Result<Vec<(u64, u64)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            if let Some(seq) = parse_segment(&entry.file_name().to_string_lossy()) {
                found.push((seq, entry.metadata()?.len()));
            }
        }
        found.sort_unstable();
        Ok(found)
    }
}

/// The writer's end: appends events to the active segment.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    shared: Arc<SpoolShared>,
    /// `None` after a failure; the next append starts a new segment.
    file: Option<File>,
    seq: u64,
    len: u64,
    segment_bytes: u64,
    dirty: bool,
    sync_dir: bool,
    counters: Arc<Counters>,
    /// Held (locked) while the spool is in use.
    _lock: File,
}

/// The delivery task's end: reads events from the cursor on.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    shared: Arc<SpoolShared>,
    seq: u64,
    offset: u64,
    persisted: Option<(u64, u64)>,
}

/// One spooled event and where it ends in its segment.
#[derive(Debug)]
pub(crate) struct Spooled {
    pub body: Vec<u8>,
    end: u64,
}

/// Opens (creating) the spool in `dir`: the writer's and the delivery task's ends.
pub(crate) fn open(
    dir: &Path,
    max_bytes: u64,
    sync_dir: bool,
    counters: Arc<Counters>,
) -> io::Result<(SpoolWriter, SpoolReader)> {
    std::fs::create_dir_all(dir)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(io::Error::other(format!(
                "another process uses the audit spool {}",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let shared = Arc::new(SpoolShared {
        dir: dir.to_owned(),
        head: Mutex::new(Head { seq: 0, len: 0 }),
        pending: AtomicU64::new(0),
        notify: Notify::new(),
        max_bytes,
    });
    let segments = shared.segments()?;
    let cursor = read_cursor(&dir.join(CURSOR));
    let last = segments.last().map_or(0, |(seq, _)| *seq);
    let active = last.max(cursor.map_or(0, |(s, _)| s)) + 1;
    // Resume at the cursor, or at the first segment left after it.
    let (mut seq, mut offset) = cursor.unwrap_or((segments.first().map_or(active, |s| s.0), 0));
    let mut pending = 0u64;
    let mut resumed = false;
    for (s, len) in &segments {
        if *s < seq {
            // Delivered before the last stop; its deletion had not happened yet.
            let _ = std::fs::remove_file(shared.segment(*s));
            continue;
        }
        if !resumed {
            if *s != seq {
                seq = *s;
                offset = 0;
            }
            offset = offset.min(*len);
            resumed = true;
        }
        pending += len - if *s == seq { offset } else { 0 };
    }
    if !resumed {
        seq = active;
        offset = 0;
    }
    shared.pending.store(pending, Ordering::Relaxed);
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(shared.segment(active))?;
    shared.set_head(Head {
        seq: active,
        len: 0,
    });
    if sync_dir {
        sync_dir_of(dir);
    }
    let writer = SpoolWriter {
        shared: shared.clone(),
        file: Some(file),
        seq: active,
        len: 0,
        segment_bytes: (max_bytes / 8).clamp(4096, 8 * 1024 * 1024),
        dirty: false,
        sync_dir,
        counters,
        _lock: lock,
    };
    let reader = SpoolReader {
        shared,
        seq,
        offset,
        persisted: cursor,
    };
    Ok((writer, reader))
}

fn read_cursor(path: &Path) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let seq = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some((seq, offset))
}

fn sync_dir_of(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

impl SpoolWriter {
    pub fn shared(&self) -> &Arc<SpoolShared> {
        &self.shared
    }

    /// Whether an append only `write`s: the active segment is open and not full (a new
    /// segment syncs the one it closes).
    pub fn can_append_now(&self) -> bool {
        self.file.is_some() && self.len < self.segment_bytes
    }

    /// Appends the events that fit (one `write`); returns, per entry, whether it was
    /// spooled (`None` entries, records without an event, count as spooled).
    pub fn append(&mut self, events: &[Option<&[u8]>]) -> io::Result<Vec<bool>> {
        if self.file.is_none() || self.len >= self.segment_bytes {
            self.next_segment()?;
        }
        let mut pending = self.shared.pending_bytes();
        let mut buffer = Vec::new();
        let accepted = events
            .iter()
            .map(|event| match event {
                None => true,
                Some(bytes) => {
                    let fits = pending + bytes.len() as u64 <= self.shared.max_bytes;
                    if fits {
                        pending += bytes.len() as u64;
                        buffer.extend_from_slice(bytes);
                    }
                    fits
                }
            })
            .collect();
        if buffer.is_empty() {
            return Ok(accepted);
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("spool closed"))?;
        self.dirty = true;
        if let Err(e) = file.write_all(&buffer) {
            // Leave no partial event behind; the next append starts a new segment.
            let _ = file.set_len(self.len);
            self.file = None;
            return Err(e);
        }
        self.len += buffer.len() as u64;
        self.shared
            .pending
            .fetch_add(buffer.len() as u64, Ordering::Relaxed);
        Ok(accepted)
    }

    /// Closes the active segment (synced) and starts the next one.
    fn next_segment(&mut self) -> io::Result<()> {
        if self.file.is_some() {
            self.sync()?;
        }
        let seq = self.seq + 1;
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(self.shared.segment(seq))?;
        if self.sync_dir {
            sync_dir_of(&self.shared.dir);
        }
        self.file = Some(file);
        self.seq = seq;
        self.len = 0;
        self.dirty = false;
        self.shared.set_head(Head { seq, len: 0 });
        Ok(())
    }

    /// `fdatasync`s the active segment if anything was written since the last sync.
    pub fn sync(&mut self) -> io::Result<bool> {
        if !self.dirty {
            return Ok(false);
        }
        let Some(file) = &self.file else {
            return Ok(false);
        };
        match file.sync_data() {
            Ok(()) => {
                self.dirty = false;
                self.counters.fsyncs.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Err(e) => {
                self.file = None;
                Err(e)
            }
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Makes everything appended so far visible to the delivery task.
    pub fn publish(&self) {
        if self.file.is_none() {
            return;
        }
        let head = Head {
            seq: self.seq,
            len: self.len,
        };
        if self.shared.head() != head {
            self.shared.set_head(head);
            self.shared.notify.notify_one();
        }
    }
}

impl SpoolReader {
    pub fn shared(&self) -> &Arc<SpoolShared> {
        &self.shared
    }

    /// Up to `max` published events from the cursor on (empty: nothing to send yet).
    /// Finished segments are deleted on the way.
    pub fn next_batch(&mut self, max: usize) -> io::Result<Vec<Spooled>> {
        loop {
            let head = self.shared.head();
            let active = self.seq >= head.seq;
            let path = self.shared.segment(self.seq);
            let limit = if active {
                head.len
            } else {
                match std::fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                    Err(e) => return Err(e),
                }
            };
            if self.offset >= limit {
                if active {
                    return Ok(Vec::new());
                }
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                self.seq = self.next_seq(head.seq)?;
                self.offset = 0;
                continue;
            }
            let mut file = File::open(&path)?;
            file.seek(SeekFrom::Start(self.offset))?;
            let mut want = (limit - self.offset).min(READ_CHUNK);
            let mut data = Vec::new();
            loop {
                data.clear();
                (&mut file).take(want).read_to_end(&mut data)?;
                file.seek(SeekFrom::Start(self.offset))?;
                let reached_limit = self.offset + data.len() as u64 >= limit;
                if data.contains(&b'\n') || reached_limit {
                    break;
                }
                // One line longer than a chunk: read it whole.
                want = limit - self.offset;
            }
            let mut events = Vec::new();
            let mut at = 0usize;
            while let Some(n) = data[at..].iter().position(|b| *b == b'\n') {
                let line = &data[at..at + n];
                at += n + 1;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    events.push(Spooled {
                        body: line.to_vec(),
                        end: self.offset + at as u64,
                    });
                }
                if events.len() >= max {
                    break;
                }
            }
            if events.is_empty() {
                let end = self.offset + at as u64;
                if end > self.offset {
                    // Only blank lines: step over them.
                    self.commit(end);
                    continue;
                }
                // No newline up to the end of a closed segment: a torn last line.
                tracing::warn!(
                    segment = %path.display(),
                    bytes = limit - self.offset,
                    "audit spool: skipping an incomplete last line (a write interrupted by a crash)"
                );
                self.commit(limit);
                continue;
            }
            return Ok(events);
        }
    }

    fn next_seq(&self, head: u64) -> io::Result<u64> {
        Ok(self
            .shared
            .segments()?
            .into_iter()
            .map(|(s, _)| s)
            .find(|s| *s > self.seq)
            .unwrap_or(head)
            .min(head))
    }

    /// Marks everything up to `event` as delivered (in memory; see [`persist`]).
    ///
    /// [`persist`]: SpoolReader::persist
    pub fn delivered(&mut self, event: &Spooled) {
        self.commit(event.end);
    }

    fn commit(&mut self, end: u64) {
        let done = end.saturating_sub(self.offset);
        let _ = self
            .shared
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(done))
            });
        self.offset = end;
    }

    /// Writes the cursor file if it moved (replaced atomically, not synced).
    pub fn persist(&mut self) -> io::Result<()> {
        let now = (self.seq, self.offset);
        if self.persisted == Some(now) {
            return Ok(());
        }
        let tmp = self.shared.dir.join(format!("{CURSOR}.tmp"));
        std::fs::write(&tmp, format!("{} {}\n", now.0, now.1))?;
        std::fs::rename(&tmp, self.shared.dir.join(CURSOR))?;
        self.persisted = Some(now);
        Ok(())
    }

    /// Keeps an event the repository refused for good in `rejected.ndjson`.
    pub fn reject(&self, event: &Spooled) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.shared.dir.join(REJECTED))?;
        let mut line = event.body.clone();
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }
}
