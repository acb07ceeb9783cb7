//! The thread and message views, the requests, and the pure readings of a
//! Communication (header or message, text, attachments, unread).

use base64::Engine as _;
use chrono::{DateTime, Utc};
use portico_fhir::reference::Reference;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::view::{array, parse_datetime, reference_of, str_at};

/// The longest snippet of the last message in the thread list, in characters.
pub const SNIPPET_CHARS: usize = 140;

/// Open or closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ThreadStatus {
    /// `in-progress`: replies are accepted.
    Open,
    /// `completed` (or any other status): read-only.
    Closed,
}

impl ThreadStatus {
    pub(super) fn of(header: &Value) -> ThreadStatus {
        if str_at(header, "status") == Some("in-progress") {
            ThreadStatus::Open
        } else {
            ThreadStatus::Closed
        }
    }
}

/// Someone taking part in a thread.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Participant {
    /// `Practitioner/pr-1`, `CareTeam/ct-1`, `Patient/pat-1`.
    pub reference: String,
    /// The name to show, when known.
    pub display: Option<String>,
    /// Whether this is the acting patient.
    pub is_me: bool,
}

/// One thread in the list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadSummary {
    pub id: String,
    pub topic: Option<String>,
    pub status: ThreadStatus,
    /// Who takes part, the patient excluded (names, or references when unknown).
    pub participants: Vec<String>,
    /// When the last message was sent (else when the thread was started).
    pub last_message_at: Option<String>,
    /// The start of the last message's text, at most 140 characters.
    pub snippet: Option<String>,
    pub message_count: usize,
    /// Messages to the patient not yet received (no `received`).
    pub unread: usize,
}

/// The patient's threads, most recently active first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadList {
    pub threads: Vec<ThreadSummary>,
    /// Served (partly) from the gateway's cache because the EHR is failing.
    pub stale: bool,
}

/// An attachment, described (its data is not sent back).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttachmentInfo {
    pub content_type: Option<String>,
    /// In bytes: `size`, else the length of the decoded data.
    pub size: Option<u64>,
    pub title: Option<String>,
}

/// One message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub sender: Option<Participant>,
    pub sent: Option<String>,
    /// The message's text (its `contentString` payloads, joined by blank lines).
    pub text: Option<String>,
    pub attachments: Vec<AttachmentInfo>,
    /// The previous message this one answers.
    pub in_response_to: Option<String>,
    /// Whether a message to the patient has been received (always true for the
    /// patient's own).
    pub read: bool,
}

/// A thread with its messages, oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ThreadView {
    pub id: String,
    pub topic: Option<String>,
    pub status: ThreadStatus,
    pub participants: Vec<Participant>,
    /// When the thread was started.
    pub started: Option<String>,
    pub messages: Vec<MessageView>,
    pub stale: bool,
}

/// An attachment sent by the patient.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAttachment {
    /// One of the EHR profile's `messages.attachment_types`.
    pub content_type: String,
    pub title: Option<String>,
    /// The content, base64 (standard alphabet, padded).
    pub data: String,
}

/// `POST /messages/threads`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewThread {
    /// A member of one of the patient's care teams (`Practitioner/…`), the care team
    /// itself (`CareTeam/…`), or one of the site's recipient pool.
    pub recipient: String,
    /// 1 to 200 characters.
    pub topic: String,
    /// 1 to the profile's `messages.max_text_chars` characters.
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<NewAttachment>,
}

/// `POST /messages/threads/{id}/replies`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewReply {
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<NewAttachment>,
}

/// Whether a resource is a Communication: only those are thread headers or messages.
/// An EHR that leaves out `search.mode` puts the resources a search `_include`s among
/// its matches; they are names for the participants, never threads.
pub(super) fn is_communication(r: &Value) -> bool {
    str_at(r, "resourceType") == Some("Communication")
}

/// A header is a Communication without `partOf` and without `payload`.
pub(super) fn is_header(c: &Value) -> bool {
    is_communication(c)
        && array(c, "partOf").next().is_none()
        && array(c, "payload").next().is_none()
}

pub(super) fn sent_at(c: &Value) -> Option<DateTime<Utc>> {
    str_at(c, "sent").and_then(parse_datetime)
}

pub(super) fn text_of(c: &Value) -> Option<String> {
    let parts: Vec<&str> = array(c, "payload")
        .filter_map(|p| str_at(p, "contentString"))
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

pub(super) fn attachments_of(c: &Value) -> Vec<AttachmentInfo> {
    array(c, "payload")
        .filter_map(|p| p.get("contentAttachment"))
        .map(|a| AttachmentInfo {
            content_type: str_at(a, "contentType").map(str::to_owned),
            size: a.get("size").and_then(Value::as_u64).or_else(|| {
                str_at(a, "data").and_then(|d| {
                    base64::engine::general_purpose::STANDARD
                        .decode(d)
                        .ok()
                        .map(|b| b.len() as u64)
                })
            }),
            title: str_at(a, "title").map(str::to_owned),
        })
        .collect()
}

pub(super) fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SNIPPET_CHARS {
        return flat;
    }
    let mut s: String = flat.chars().take(SNIPPET_CHARS - 1).collect();
    s.push('…');
    s
}

pub(super) fn is_patient_ref(reference: &Value, patient: &str) -> bool {
    reference_of(reference)
        .and_then(|r| Reference::parse(r).ok())
        .is_some_and(|r| r.is("Patient", patient))
}

/// Whether a message is to the patient and not yet received.
pub(super) fn unread(c: &Value, patient: &str) -> bool {
    c.get("received").is_none()
        && !c.get("sender").is_some_and(|s| is_patient_ref(s, patient))
        && array(c, "recipient").any(|r| is_patient_ref(r, patient))
}
