//! The audit trail against real files in temporary directories, and the FHIR sink
//! against a wiremock repository. No wall-clock performance assertions: waits poll a
//! condition with a generous deadline.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_access::Interaction;
use portico_access::audit::{AuditRecord, AuditSink, Phase};
use serde_json::Value;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;

fn config(dir: &Path) -> AuditConfig {
    AuditConfig {
        path: dir.join("audit.jsonl"),
        instance: Some("test-1".to_owned()),
        ..AuditConfig::default()
    }
}

fn record(i: usize) -> AuditRecord {
    AuditRecord::new(None, Interaction::Read, Some("Observation"))
        .with_resource_id(format!("o{i}"))
        .with_request_id(format!("req-{i}"))
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is one JSON object"))
        .collect()
}

fn request_ids(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect()
}

fn expected_ids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("req-{i}")).collect()
}

/// The active file and the rotated ones, oldest first.
fn all_files(config: &AuditConfig) -> Vec<PathBuf> {
    let name = config
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut rotated: Vec<PathBuf> = std::fs::read_dir(config.path.parent().unwrap())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}."))
        })
        .collect();
    rotated.sort();
    rotated.push(config.path.clone());
    rotated
}

async fn record_concurrently(trail: &AuditTrail, range: std::ops::Range<usize>) {
    let tasks: Vec<_> = range
        .map(|i| {
            let trail = trail.clone();
            tokio::spawn(async move { trail.record(&record(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().expect("acknowledged");
    }
}

/// Polls `condition` every 10 ms for up to 20 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_are_in_the_file_after_the_sink_is_dropped() {
    for durability in [Durability::Written, Durability::Synced] {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability,
            ..config(&dir.path().join("nested"))
        };
        let trail = AuditTrail::start(&config, None).unwrap();
        record_concurrently(&trail, 0..200).await;
        // No close: only what was acknowledged counts, and all of it must be there.
        drop(trail);
        let lines = read_lines(&config.path);
        assert_eq!(lines.len(), 200, "{durability:?}");
        let ids: BTreeSet<String> = request_ids(&lines).into_iter().collect();
        assert_eq!(ids, expected_ids(0..200), "{durability:?}");
        assert!(lines.iter().all(|l| l["instance"] == "test-1"));
        assert!(lines.iter().all(|l| l["resource_type"] == "Observation"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_mode_commits_concurrent_records_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::Synced,
        ..config(dir.path())
    };
    let trail = AuditTrail::start(&config, None).unwrap();
    record_concurrently(&trail, 0..1000).await;
    let stats = trail.stats();
    assert_eq!(stats.records_written, 1000);
    assert_eq!(stats.failures, 0);
    assert!(stats.fsyncs >= 1, "synced mode syncs: {stats:?}");
    assert!(
        stats.fsyncs * 10 <= stats.records_written,
        "group commit: far fewer fsyncs than records: {stats:?}"
    );
    assert!(stats.batches * 10 <= stats.records_written, "{stats:?}");
    assert_eq!(stats.queue_depth, 0);
    trail.close().await;
    assert_eq!(read_lines(&config.path).len(), 1000);
}

#[tokio::test]
async fn written_mode_syncs_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let trail = AuditTrail::start(&config(dir.path()), None).unwrap();
    trail.record(&record(0)).await.unwrap();
    assert_eq!(trail.stats().records_written, 1);
    // The bounded-delay sync: no fsync per record, but one soon after.
    eventually("the periodic fdatasync", || trail.stats().fsyncs >= 1).await;
    trail.close().await;
}

#[tokio::test]
async fn written_mode_writes_on_the_callers_thread_when_the_writer_is_idle() {
    use futures::FutureExt;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();
    // The file is open now and the writer idle: the next record needs no hand-off, so
    // it is written before its future is first polled to the end.
    let answer = trail.record(&record(1)).now_or_never();
    assert!(matches!(answer, Some(Ok(()))), "{answer:?}");
    assert_eq!(request_ids(&read_lines(&config.path)), ["req-0", "req-1"]);
    trail.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waits_for_a_busy_writer_and_is_written_by_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();
    let writer = trail.inner.writer.clone();
    let held = std::sync::Arc::new(std::sync::Barrier::new(2));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = {
        let held = held.clone();
        std::thread::spawn(move || {
            let _guard = writer.lock().unwrap();
            held.wait();
            let _ = released.recv();
        })
    };
    held.wait();
    let task = tokio::spawn({
        let trail = trail.clone();
        async move { trail.record(&record(1)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !task.is_finished(),
        "acknowledged while the writer was held"
    );
    assert_eq!(request_ids(&read_lines(&config.path)), ["req-0"]);
    release.send(()).unwrap();
    holder.join().unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(request_ids(&read_lines(&config.path)), ["req-0", "req-1"]);
    trail.close().await;
}

#[tokio::test]
async fn size_rotation_keeps_every_file_under_the_bound_and_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        max_file_bytes: 2048,
        rotate_seconds: 0,
        ..config(dir.path())
    };
    let trail = AuditTrail::start(&config, None).unwrap();
    // Several batches of several records.
    for start in (0..400).step_by(40) {
        record_concurrently(&trail, start..start + 40).await;
    }
    trail.close().await;
    let files = all_files(&config);
    assert!(files.len() > 10, "rotated: {files:?}");
    let mut ids = Vec::new();
    for file in &files {
        let size = std::fs::metadata(file).unwrap().len();
        assert!(size <= 2048, "{} holds {size} bytes", file.display());
        ids.extend(request_ids(&read_lines(file)));
    }
    assert_eq!(ids.len(), 400, "no line lost or doubled");
    assert_eq!(
        ids.into_iter().collect::<BTreeSet<_>>(),
        expected_ids(0..400)
    );
    assert_eq!(trail.stats().rotations as usize, files.len() - 1);
}

#[tokio::test]
async fn reopen_after_an_external_rename_writes_to_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let trail = AuditTrail::start(&config, None).unwrap();
    for i in 0..3 {
        trail.record(&record(i)).await.unwrap();
    }
    // What logrotate does: move the file away, then SIGHUP (whose handler calls this).
    let moved = dir.path().join("audit.jsonl.1");
    std::fs::rename(&config.path, &moved).unwrap();
    trail.reopen().await.unwrap();
    for i in 3..6 {
        trail.record(&record(i)).await.unwrap();
    }
    trail.close().await;
    assert_eq!(
        request_ids(&read_lines(&moved)),
        ["req-0", "req-1", "req-2"]
    );
    assert_eq!(
        request_ids(&read_lines(&config.path)),
        ["req-3", "req-4", "req-5"]
    );
}

#[tokio::test]
async fn the_disk_bound_deletes_the_oldest_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        max_file_bytes: 1024,
        max_total_bytes: 4096,
        rotate_seconds: 0,
        ..config(dir.path())
    };
    let trail = AuditTrail::start(&config, None).unwrap();
    for i in 0..200 {
        trail.record(&record(i)).await.unwrap();
    }
    trail.close().await;
    let stats = trail.stats();
    assert!(stats.files_deleted > 0, "{stats:?}");
    let files = all_files(&config);
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // Bounded when a rotation happens; the active file grows by at most a file after.
    assert!(total <= 4096 + 1024, "{total} bytes on disk");
    // What is left is the newest records, without a gap: the oldest files went first.
    let ids: Vec<usize> = files
        .iter()
        .flat_map(|f| request_ids(&read_lines(f)))
        .map(|id| id["req-".len()..].parse().unwrap())
        .collect();
    assert_eq!(*ids.last().unwrap(), 199);
    assert!(ids[0] > 0, "the oldest records were deleted");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[tokio::test]
async fn refuse_fails_records_while_the_file_cannot_be_written_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = config(&logs);
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();

    // The directory is replaced by a regular file: `logs/audit.jsonl` cannot exist
    // (permission bits would not stop root; this does).
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"not a directory").unwrap();
    assert!(trail.reopen().await.is_err());
    let err = trail.record(&record(1)).await.unwrap_err();
    assert!(err.to_string().contains("cannot be written"), "{err}");
    assert!(
        !err.to_string().contains("req-1"),
        "no record content in errors"
    );
    let stats = trail.stats();
    assert_eq!((stats.records_written, stats.failures), (1, 1));

    // The disk is back: the next batch opens the path again.
    std::fs::remove_file(&logs).unwrap();
    std::fs::create_dir(&logs).unwrap();
    trail.record(&record(2)).await.unwrap();
    trail.close().await;
    assert_eq!(request_ids(&read_lines(&config.path)), ["req-2"]);
}

#[tokio::test]
async fn continue_answers_ok_and_counts_the_failures() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let config = AuditConfig {
        on_failure: OnFailure::Continue,
        ..config(&logs)
    };
    let trail = AuditTrail::start(&config, None).unwrap();
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"not a directory").unwrap();
    assert!(trail.reopen().await.is_err());
    for i in 0..3 {
        trail.record(&record(i)).await.unwrap();
    }
    let stats = trail.stats();
    assert_eq!((stats.records_written, stats.failures), (0, 3));
    trail.close().await;
    // After close, records fail too: counted, and answered per the policy.
    trail.record(&record(3)).await.unwrap();
    assert_eq!(trail.stats().failures, 4);
}

/// A writer into shared memory, standing in for standard output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_sink_writes_whole_lines_next_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        sinks: vec![SinkKind::File, SinkKind::Stdout],
        ..config(dir.path())
    };
    let out = Captured::default();
    let trail = AuditTrail::start_with(&config, None, Some(StdoutSink::new(Box::new(out.clone()))))
        .unwrap();
    record_concurrently(&trail, 0..100).await;
    trail.close().await;
    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        request_ids(&lines).into_iter().collect::<BTreeSet<_>>(),
        expected_ids(0..100)
    );
    assert_eq!(read_lines(&config.path).len(), 100);
}

/// `/dev/full`: every write fails with "no space left on device", for real.
fn dev_full() -> StdoutSink {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    StdoutSink::new(Box::new(full))
}

#[tokio::test]
async fn a_full_disk_on_stdout_is_refused_or_counted() {
    let dir = tempfile::tempdir().unwrap();
    let refuse = AuditConfig {
        sinks: vec![SinkKind::Stdout],
        ..config(dir.path())
    };
    let trail = AuditTrail::start_with(&refuse, None, Some(dev_full())).unwrap();
    let err = trail.record(&record(0)).await.unwrap_err();
    assert!(err.to_string().contains("standard output"), "{err}");
    assert_eq!(trail.stats().failures, 1);
    trail.close().await;

    let carry_on = AuditConfig {
        on_failure: OnFailure::Continue,
        ..refuse
    };
    let trail = AuditTrail::start_with(&carry_on, None, Some(dev_full())).unwrap();
    trail.record(&record(0)).await.unwrap();
    assert_eq!(trail.stats().failures, 1);
    trail.close().await;
}

#[tokio::test]
async fn async_mode_returns_at_once_and_refuses_once_a_write_failed() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig {
        durability: Durability::Async,
        ..config(dir.path())
    };
    let trail = AuditTrail::start(&config, None).unwrap();
    for i in 0..50 {
        trail.record(&record(i)).await.unwrap();
    }
    // Queued, not necessarily written; close drains the queue.
    trail.close().await;
    assert_eq!(read_lines(&config.path).len(), 50);

    let broken = AuditConfig {
        sinks: vec![SinkKind::Stdout],
        ..config
    };
    let trail = AuditTrail::start_with(&broken, None, Some(dev_full())).unwrap();
    trail
        .record(&record(0))
        .await
        .expect("nothing is known to have failed yet");
    eventually("the failed write", || trail.stats().failures >= 1).await;
    assert!(trail.record(&record(1)).await.is_err());
    trail.close().await;
}

// ---------------------------------------------------------------------------------------
// The FHIR sink

fn fhir_config(dir: &Path, server: &MockServer) -> AuditConfig {
    let mut fhir = FhirSinkConfig::new(url::Url::parse(&format!("{}/fhir", server.uri())).unwrap());
    fhir.spool_dir = dir.join("spool");
    fhir.retry_initial_ms = 20;
    fhir.retry_max_ms = 50;
    AuditConfig {
        sinks: vec![SinkKind::File, SinkKind::Fhir],
        fhir: Some(fhir),
        ..config(dir)
    }
}

/// The request id in an AuditEvent.
fn event_request_id(event: &Value) -> String {
    event["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"]["code"] == "XrequestId")
        .and_then(|e| e["what"]["identifier"]["value"].as_str())
        .unwrap()
        .to_owned()
}

async fn posted_request_ids(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r.url.path(), "/fhir/AuditEvent");
            event_request_id(&serde_json::from_slice(&r.body).unwrap())
        })
        .collect()
}

fn audit_event_post() -> wiremock::MockBuilder {
    Mock::given(method("POST")).and(path("/fhir/AuditEvent"))
}

#[tokio::test]
async fn fhir_events_are_spooled_while_the_repository_fails_and_delivered_once() {
    let server = MockServer::start().await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(503))
        .with_priority(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = fhir_config(dir.path(), &server);
    let trail = AuditTrail::start(&config, None).unwrap();
    for i in 0..10 {
        trail.record(&record(i)).await.unwrap();
    }
    eventually("a few failed attempts", || {
        trail.stats().fhir_failed_attempts >= 3
    })
    .await;
    // Acknowledged means spooled: all of it waits on disk while the repository fails.
    let stats = trail.stats();
    assert_eq!(stats.fhir_delivered, 0);
    assert!(stats.spool_bytes > 0, "{stats:?}");
    let segments = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("segment-"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum::<usize>();
    assert_eq!(segments, 10, "every event is in the spool");

    // The repository recovers (mounted over the failing answer, with no gap between).
    audit_event_post()
        .respond_with(ResponseTemplate::new(201))
        .with_priority(1)
        .mount(&server)
        .await;
    eventually("every event delivered", || {
        trail.stats().fhir_delivered == 10
    })
    .await;
    let stats = trail.stats();
    assert_eq!(stats.spool_bytes, 0, "{stats:?}");
    let posted = posted_request_ids(&server).await;
    // The first event was retried until it went through; then each went once, in order.
    let retries = stats.fhir_failed_attempts as usize;
    assert_eq!(posted.len(), retries + 10, "{posted:?}");
    assert!(
        posted[..=retries].iter().all(|id| id == "req-0"),
        "{posted:?}"
    );
    let rest: Vec<String> = (1..10).map(|i| format!("req-{i}")).collect();
    assert_eq!(posted[retries + 1..], rest[..]);
    trail.close().await;
}

#[tokio::test]
async fn fhir_spool_is_replayed_after_a_restart() {
    let server = MockServer::start().await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = fhir_config(dir.path(), &server);
    let trail = AuditTrail::start(&config, None).unwrap();
    for i in 0..5 {
        trail.record(&record(i)).await.unwrap();
    }
    eventually("a failed attempt", || {
        trail.stats().fhir_failed_attempts >= 1
    })
    .await;
    trail.close().await;
    drop(trail);

    // The repository is back; a new process (a new trail on the same spool) starts.
    server.reset().await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let trail = AuditTrail::start(&config, None).unwrap();
    assert!(
        trail.stats().spool_bytes > 0,
        "the spool survived the restart"
    );
    eventually("the spool replayed", || trail.stats().fhir_delivered == 5).await;
    trail.close().await;
    assert_eq!(
        posted_request_ids(&server).await,
        ["req-0", "req-1", "req-2", "req-3", "req-4"]
    );

    // Delivered is delivered: another start sends nothing again.
    let trail = AuditTrail::start(&config, None).unwrap();
    assert_eq!(trail.stats().spool_bytes, 0);
    trail.record(&record(5)).await.unwrap();
    eventually("the new event", || trail.stats().fhir_delivered == 1).await;
    trail.close().await;
    assert_eq!(posted_request_ids(&server).await.len(), 6);
}

#[tokio::test]
async fn a_spool_directory_serves_one_process_at_a_time() {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = fhir_config(dir.path(), &server);
    let trail = AuditTrail::start(&config, None).unwrap();
    let mut other = config.clone();
    other.path = dir.path().join("other.jsonl");
    let err = AuditTrail::start(&other, None).unwrap_err().to_string();
    assert!(err.contains("another process"), "{err}");
    trail.close().await;
}

#[tokio::test]
async fn events_the_repository_refuses_for_good_are_kept_aside() {
    let server = MockServer::start().await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(422))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(201))
        .with_priority(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = fhir_config(dir.path(), &server);
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();
    trail.record(&record(1)).await.unwrap();
    eventually("both handled", || {
        let s = trail.stats();
        s.fhir_rejected == 1 && s.fhir_delivered == 1
    })
    .await;
    trail.close().await;
    let kept = std::fs::read_to_string(dir.path().join("spool").join(spool::REJECTED)).unwrap();
    let kept: Vec<Value> = kept
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(event_request_id(&kept[0]), "req-0");
}

#[tokio::test]
async fn a_full_spool_is_a_failure_of_the_trail() {
    let server = MockServer::start().await;
    audit_event_post()
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = fhir_config(dir.path(), &server);
    let one_event = serde_json::to_vec(&fhir::audit_event(&record(0), "test-1"))
        .unwrap()
        .len() as u64;
    config.fhir.as_mut().unwrap().max_spool_bytes = one_event * 2 + 10;
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();
    trail.record(&record(1)).await.unwrap();
    let err = trail.record(&record(2)).await.unwrap_err();
    assert!(err.to_string().contains("spool is full"), "{err}");
    let stats = trail.stats();
    assert_eq!((stats.spool_overflows, stats.failures), (1, 1));
    trail.close().await;

    // With `continue`, the event is dropped from the FHIR path only: the file has it.
    config.on_failure = OnFailure::Continue;
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(3)).await.unwrap();
    assert_eq!(trail.stats().spool_overflows, 1);
    trail.close().await;
    let ids = request_ids(&read_lines(&config.path));
    assert!(ids.contains(&"req-3".to_owned()), "{ids:?}");
}

#[tokio::test]
async fn bearer_tokens_are_sent() {
    let server = MockServer::start().await;
    audit_event_post()
        .and(header("authorization", "Bearer s3cret-token"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut config = fhir_config(dir.path(), &server);
    let fhir = config.fhir.as_mut().unwrap();
    fhir.auth = FhirAuthKind::Bearer;
    fhir.token_file = Some(token_file);
    let trail = AuditTrail::start(&config, None).unwrap();
    trail.record(&record(0)).await.unwrap();
    eventually("delivery with the token", || {
        trail.stats().fhir_delivered == 1
    })
    .await;
    trail.close().await;
}

#[test]
fn audit_events_follow_the_basic_audit_log_patterns() {
    let claims = serde_json::json!({"sub": "u1", "client_id": "app", "patient": "pat-1", "scope": "patient/*.rs"});
    let principal = portico_access::Principal::from_claims(
        claims.as_object().unwrap(),
        &portico_access::principal::ClaimNames::default(),
    )
    .unwrap();
    let read = AuditRecord::new(Some(&principal), Interaction::Read, Some("Observation"))
        .with_resource_id("o1")
        .with_request_id("req-9")
        .with_upstream_status(200);
    let event = fhir::audit_event(&read, "gw-1");
    assert_eq!(event["resourceType"], "AuditEvent");
    assert_eq!(
        event["type"]["system"],
        "http://terminology.hl7.org/CodeSystem/audit-event-type"
    );
    assert_eq!(event["type"]["code"], "rest");
    assert_eq!(event["subtype"][0]["code"], "read");
    assert_eq!(event["action"], "R");
    assert_eq!(event["outcome"], "0");
    assert_eq!(event["agent"][0]["who"]["identifier"]["value"], "u1");
    assert_eq!(event["agent"][0]["requestor"], true);
    assert_eq!(event["agent"][1]["who"]["identifier"]["value"], "app");
    assert_eq!(event["agent"][1]["requestor"], false);
    assert_eq!(event["source"]["observer"]["identifier"]["value"], "gw-1");
    let entities = event["entity"].as_array().unwrap();
    assert_eq!(entities[0]["what"]["reference"], "Patient/pat-1");
    assert_eq!(entities[0]["role"]["code"], "1");
    assert_eq!(entities[1]["what"]["reference"], "Observation/o1");
    assert_eq!(event_request_id(&event), "req-9");
    assert!(event["recorded"].as_str().unwrap().ends_with('Z'));

    // A valid R4 resource, by fhirbolt's strict parser.
    let strict = |event: &Value| {
        portico_fhir::parse::parse_resource(
            &serde_json::to_vec(event).unwrap(),
            portico_fhir::parse::Mode::Strict,
        )
        .unwrap_or_else(|e| panic!("not a valid AuditEvent: {e}\n{event}"));
    };
    strict(&event);

    let policy = portico_access::Policy::new("https://ehr/fhir");
    let denial = policy
        .check_read(
            &principal,
            &serde_json::json!({"resourceType": "Observation", "subject": {"reference": "Patient/pat-12"}}),
        )
        .unwrap_err();
    let denied = fhir::audit_event(&read.clone().denied(&denial), "gw-1");
    assert_eq!(denied["outcome"], "4");
    assert_eq!(denied["outcomeDesc"], "denied: not-in-compartment");
    strict(&denied);

    let search = AuditRecord::new(Some(&principal), Interaction::Search, Some("Condition"));
    let search = fhir::audit_event(&search, "gw-1");
    assert_eq!(search["action"], "E");
    assert_eq!(search["subtype"][0]["code"], "search");
    assert_eq!(search["entity"][1]["name"], "Condition");
    strict(&search);

    let attempt = AuditRecord::new(Some(&principal), Interaction::Create, Some("Communication"))
        .with_phase(Phase::Attempt);
    let attempt = fhir::audit_event(&attempt, "gw-1");
    assert_eq!(attempt["action"], "C");
    assert!(
        attempt["outcomeDesc"]
            .as_str()
            .unwrap()
            .starts_with("attempt")
    );
    strict(&attempt);

    let failed = AuditRecord::new(None, Interaction::Update, Some("Appointment"))
        .with_resource_id("a1")
        .with_upstream_status(502);
    let failed = fhir::audit_event(&failed, "gw-1");
    assert_eq!(failed["outcome"], "8");
    assert_eq!(failed["agent"][0]["who"]["display"], "unauthenticated");
    strict(&failed);
}

#[test]
fn the_instance_defaults_to_the_hostname_or_a_random_id() {
    let configured = AuditConfig {
        instance: Some("gw-7".into()),
        ..AuditConfig::default()
    };
    assert_eq!(configured.resolve_instance(), "gw-7");
    let default = AuditConfig::default().resolve_instance();
    match std::env::var("HOSTNAME") {
        Ok(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            assert_eq!(default, host)
        }
        _ => assert!(default.starts_with("portico-"), "{default}"),
    }
}
