//! The `file` sink: one JSON line per record, appended to `path`, rotated by size and
//! by time, reopened on request (SIGHUP), and bounded on disk.
//!
//! Only the writer task touches a [`RotatingFile`], always from a blocking thread.
//!
//! - **Rotation** renames `path` to `path.<UTC time of the rotation>` (for example
//!   `portico-audit.jsonl.20261205T000000.004Z`, a suffix `-1`, `-2`… if that name is
//!   taken) and opens a fresh `path`. By size, it happens before a write would take the
//!   file past `max_file_bytes` (a batch is split at line boundaries so that every file
//!   stays under the bound; only a single record longer than the bound makes a file
//!   exceed it). By time, it happens at the first write or tick in a new period of
//!   `rotate_seconds` (counted from the Unix epoch, so 86400 rotates at midnight UTC).
//!   The old file is `fdatasync`ed before it is renamed.
//! - **Reopen** (SIGHUP): for an external logrotate that has moved `path` away; the old
//!   handle is synced and closed, and `path` is opened (created) again.
//! - **Retention**: with `max_total_bytes`, the oldest rotated files (named as above;
//!   files compressed afterwards, `…Z.gz`, count too) are deleted while the active file
//!   and the rotated ones exceed the bound, each deletion logged as a warning.
//! - **Torn tails**: a file that does not end with a newline (a crash in the middle of a
//!   write) gets one before anything is appended, so every record stays one line.
//! - **Failures**: a failed write or open leaves the file closed; the next batch opens
//!   `path` again, so the trail recovers by itself once the disk does.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Counters;

/// How the file is rotated and bounded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_file_bytes: u64,
    pub rotate_seconds: u64,
    pub max_total_bytes: u64,
    /// `fsync` the directory after creating or renaming files (`synced` durability).
    pub sync_dir: bool,
}

#[derive(Debug)]
pub(crate) struct RotatingFile {
    path: PathBuf,
    limits: Limits,
    /// `None` after a failure, until the next successful open.
    file: Option<File>,
    /// The size of the open file.
    size: u64,
    /// The `rotate_seconds` period the open file's records belong to.
    period: u64,
    /// Written since the last `fdatasync`.
    dirty: bool,
    counters: Arc<Counters>,
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl RotatingFile {
    /// Opens (creating it and its directory if needed) `path` for appending.
    pub fn open(path: &Path, limits: Limits, counters: Arc<Counters>) -> io::Result<RotatingFile> {
        let mut file = RotatingFile {
            path: path.to_owned(),
            limits,
            file: None,
            size: 0,
            period: 0,
            dirty: false,
            counters,
        };
        file.open_path(SystemTime::now())?;
        Ok(file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn period_of(&self, t: SystemTime) -> u64 {
        match self.limits.rotate_seconds {
            0 => 0,
            n => unix_seconds(t) / n,
        }
    }

    fn open_path(&mut self, now: SystemTime) -> io::Result<()> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other("the audit path is not a regular file"));
        }
        let mut size = meta.len();
        if size > 0 {
            file.seek(SeekFrom::End(-1))?;
            let mut last = [0u8];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
                size += 1;
                self.dirty = true;
            }
        }
        // An existing file belongs to the period of its last write.
        self.period = if size > 0 {
            self.period_of(meta.modified().unwrap_or(now))
        } else {
            self.period_of(now)
        };
        self.size = size;
        self.file = Some(file);
        if self.limits.sync_dir {
            sync_parent(&self.path);
        }
        Ok(())
    }

    /// Appends `lines` (each ending in a newline): one `write` for the batch, split only
    /// where a size rotation falls.
    pub fn append(&mut self, lines: &[&[u8]], now: SystemTime) -> io::Result<()> {
        if self.file.is_none() {
            self.open_path(now)?;
        }
        self.rotate_if_due(now)?;
        let max = self.limits.max_file_bytes;
        let mut chunk: Vec<u8> = Vec::with_capacity(lines.iter().map(|l| l.len()).sum());
        for line in lines {
            let line_len = line.len() as u64;
            let pending = self.size + chunk.len() as u64;
            if max > 0 && pending > 0 && pending + line_len > max {
                self.write_chunk(&chunk)?;
                chunk.clear();
                self.rotate(now)?;
            }
            chunk.extend_from_slice(line);
        }
        self.write_chunk(&chunk)
    }

    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let file = self.file.as_mut().ok_or_else(closed)?;
        self.dirty = true;
        match file.write_all(chunk) {
            Ok(()) => {
                self.size += chunk.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Part of the chunk may be on disk: reopening adds the missing newline.
                self.file = None;
                Err(e)
            }
        }
    }

    /// Whether `len` more bytes go into the open file with no rotation (by size or
    /// time) and no opening first: an append that only `write`s.
    pub fn can_append_now(&self, len: u64, now: SystemTime) -> bool {
        let max = self.limits.max_file_bytes;
        self.file.is_some()
            && !self.rotation_due(now)
            && (max == 0 || self.size == 0 || self.size + len <= max)
    }

    /// `fdatasync`s the file if anything was written since the last sync. Returns
    /// whether it synced.
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

    /// Whether a time rotation is due at `now` (only for a file holding records).
    pub fn rotation_due(&self, now: SystemTime) -> bool {
        self.limits.rotate_seconds > 0
            && self.file.is_some()
            && self.size > 0
            && self.period_of(now) != self.period
    }

    pub fn rotate_if_due(&mut self, now: SystemTime) -> io::Result<()> {
        if self.rotation_due(now) {
            self.rotate(now)?;
        } else if self.size == 0 {
            self.period = self.period_of(now);
        }
        Ok(())
    }

    /// Closes `path` (synced) and opens it again: what SIGHUP does after an external
    /// rotation moved the file away.
    pub fn reopen(&mut self, now: SystemTime) -> io::Result<()> {
        let synced = self.sync();
        self.file = None;
        self.dirty = false;
        self.open_path(now)?;
        synced.map(|_| ())
    }

    /// Renames the file to `path.<UTC time>` and opens a fresh `path`.
    fn rotate(&mut self, now: SystemTime) -> io::Result<()> {
        self.sync()?;
        self.file = None;
        let target = self.rotated_name(now);
        match std::fs::rename(&self.path, &target) {
            Ok(()) => {
                self.counters.rotations.fetch_add(1, Ordering::Relaxed);
                tracing::info!(rotated_to = %target.display(), "audit log rotated");
            }
            // Moved away by someone else (a logrotate without SIGHUP): start afresh.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.size = 0;
        self.open_path(now)?;
        self.enforce_retention();
        Ok(())
    }

    fn rotated_name(&self, now: SystemTime) -> PathBuf {
        let stamp = chrono::DateTime::<chrono::Utc>::from(now)
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string();
        let base = format!("{}.{stamp}", self.file_name());
        let mut candidate = self.path.with_file_name(&base);
        let mut n = 1;
        while candidate.exists() {
            candidate = self.path.with_file_name(format!("{base}-{n}"));
            n += 1;
        }
        candidate
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The rotated files of this log, oldest first, with their sizes.
    pub fn rotated_files(&self) -> Vec<(PathBuf, u64)> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let prefix = format!("{}.", self.file_name());
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut found: Vec<(String, PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(&prefix)?;
                is_rotation_stamp(rest).then_some(())?;
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| (name, e.path(), meta.len()))
            })
            .collect();
        // The stamps are fixed-width UTC times: by name is by age.
        found.sort();
        found.into_iter().map(|(_, p, len)| (p, len)).collect()
    }

    /// Deletes the oldest rotated files while the log takes more than `max_total_bytes`.
    fn enforce_retention(&mut self) {
        let bound = self.limits.max_total_bytes;
        if bound == 0 {
            return;
        }
        let rotated = self.rotated_files();
        let mut total = self.size + rotated.iter().map(|(_, len)| len).sum::<u64>();
        for (path, len) in rotated {
            if total <= bound {
                break;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    total -= len;
                    self.counters.files_deleted.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        deleted = %path.display(),
                        bytes = len,
                        max_total_bytes = bound,
                        "audit retention: deleted the oldest rotated audit file (audit.max_total_bytes)"
                    );
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "audit retention: cannot delete a rotated audit file");
                    break;
                }
            }
        }
    }
}

/// `20261205T000000.004Z…`: the rotation stamp this module writes, with whatever follows
/// (a collision suffix, a compression extension).
fn is_rotation_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 16 && b[..8].iter().all(u8::is_ascii_digit) && b[8] == b'T'
}

fn closed() -> io::Error {
    io::Error::other("the audit file is not open")
}

/// `fsync`s the directory holding `path`, so that a created or renamed file survives a
/// power loss. Best effort: not every platform can open a directory.
fn sync_parent(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(max_file_bytes: u64, rotate_seconds: u64, max_total_bytes: u64) -> Limits {
        Limits {
            max_file_bytes,
            rotate_seconds,
            max_total_bytes,
            sync_dir: false,
        }
    }

    #[test]
    fn a_torn_last_line_is_closed_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").unwrap();
        let mut f = RotatingFile::open(&path, limits(0, 0, 0), Arc::default()).unwrap();
        f.append(&[b"{\"c\":3}\n"], SystemTime::now()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":\n{\"c\":3}\n");
    }

    #[test]
    fn time_rotation_happens_in_a_new_period_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let counters = Arc::new(Counters::default());
        let mut f = RotatingFile::open(&path, limits(0, 86_400, 0), counters.clone()).unwrap();
        let now = SystemTime::now();
        assert!(!f.rotation_due(now), "an empty file is not rotated");
        f.append(&[b"1\n"], now).unwrap();
        assert!(!f.rotation_due(now));
        let tomorrow = now + Duration::from_secs(86_400);
        assert!(f.rotation_due(tomorrow));
        f.append(&[b"2\n"], tomorrow).unwrap();
        assert_eq!(counters.rotations.load(Ordering::Relaxed), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "2\n");
        let rotated = f.rotated_files();
        assert_eq!(rotated.len(), 1);
        assert_eq!(std::fs::read_to_string(&rotated[0].0).unwrap(), "1\n");
        assert!(!f.rotation_due(tomorrow));
    }

    #[test]
    fn rotation_stamps_are_recognised() {
        assert!(is_rotation_stamp("20261205T000000.004Z"));
        assert!(is_rotation_stamp("20261205T000000.004Z-1"));
        assert!(is_rotation_stamp("20261205T000000.004Z.gz"));
        assert!(!is_rotation_stamp("1"));
        assert!(!is_rotation_stamp("lock"));
    }
}
