//! The `stdout` sink: one JSON line per record on standard output, for log pipelines
//! that collect a container's output (Kubernetes, systemd's journal).
//!
//! The rule that keeps the stream clean: application logs go to standard error
//! (`telemetry.rs`), and with this sink standard output carries audit lines only —
//! besides what `portico demo` prints at start. Only the writer task writes here, a batch
//! at a time, so lines never interleave. Standard output cannot be synced: its guarantee
//! is "handed to the pipe" (`written`) in every durability mode but `async`.

use std::io::{self, Write};

pub(crate) struct StdoutSink {
    out: Box<dyn Write + Send>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink").finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// The process's standard output.
    pub fn stdout() -> StdoutSink {
        StdoutSink::new(Box::new(io::stdout()))
    }

    /// Any writer (tests pass a buffer or `/dev/full`).
    pub fn new(out: Box<dyn Write + Send>) -> StdoutSink {
        StdoutSink { out }
    }

    /// Writes a batch of whole lines and flushes it to the pipe.
    pub fn append(&mut self, batch: &[u8]) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.out.write_all(batch)?;
        self.out.flush()
    }
}
