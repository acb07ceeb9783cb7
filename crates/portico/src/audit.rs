//! The audit sink: every access decision, one JSON object per line, appended to a file.
//!
//! Records name who asked (subject, client), for which patient compartment, what
//! interaction on which type, the decision and its reason, and the upstream status; they
//! never contain resource bodies or tokens. Each record is written and flushed before
//! the response that it describes is sent; if the sink fails, the failure is logged
//! (without the record).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use portico_access::audit::{AuditError, AuditRecord, AuditSink};

/// Appends JSON lines to a file.
#[derive(Debug)]
pub struct FileAuditSink {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
}

impl FileAuditSink {
    /// Opens (creating if needed) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<FileAuditSink> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(FileAuditSink {
            path: path.to_owned(),
            file: Mutex::new(BufWriter::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[async_trait]
impl AuditSink for FileAuditSink {
    async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).map_err(|e| AuditError(e.to_string()))?;
        line.push(b'\n');
        let mut file = self
            .file
            .lock()
            .map_err(|_| AuditError("audit file lock poisoned".into()))?;
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|e| AuditError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portico_access::Interaction;

    #[tokio::test]
    async fn appends_one_line_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/audit.jsonl");
        let sink = FileAuditSink::open(&path).unwrap();
        sink.record(&AuditRecord::new(None, Interaction::Read, Some("Patient")))
            .await
            .unwrap();
        sink.record(&AuditRecord::new(
            None,
            Interaction::Search,
            Some("Observation"),
        ))
        .await
        .unwrap();
        drop(sink);
        let again = FileAuditSink::open(&path).unwrap();
        again
            .record(&AuditRecord::new(
                None,
                Interaction::Create,
                Some("Communication"),
            ))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "appended, not truncated");
        assert_eq!(lines[0]["resource_type"], "Patient");
        assert_eq!(lines[2]["interaction"], "create");
    }
}
