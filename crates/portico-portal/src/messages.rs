//! Secure messages: Medplum-style threads of `Communication`.
//!
//! A **thread** is a header `Communication` with no `payload` and no `partOf`: its
//! `status` says whether it is open (`in-progress`) or closed (`completed`; any other
//! status is shown as closed), `topic.text` is its subject line, `subject` is the
//! patient and `recipient` lists the participants (the patient included). Each
//! **message** is a `Communication` with `partOf` the header, `inResponseTo` the
//! previous message, `sender`, `recipient`, `sent` and a `payload` of `contentString`
//! and `contentAttachment` entries (notes §4).
//!
//! Queries: the thread list is one search of all the patient's Communications
//! (`Communication?_sort=sent&_include=Communication:recipient`, narrowed to the patient
//! by the [`Ctx`]), grouped here into headers and their messages, with the participants'
//! names from the included resources (verified like reads; any name not included is read,
//! at the same time). Only Communications are headers or messages: a resource of another
//! type among the matches (an EHR that leaves out `search.mode: include`) counts as
//! included. When that answer is not whole (more than [`COMBINED_BOUND`]
//! Communications or [`MAX_THREADS`] threads) or the EHR refuses it, the list falls back
//! to the header search, `Communication?subject=Patient/x&part-of:missing=true` (the
//! sandbox supports `:missing`; the result is still filtered to headers here, so an EHR
//! that ignores the modifier cannot make a message look like a thread), then the
//! messages of up to [`OR_CHUNK`] threads per search with an OR list (the chunks at the
//! same time). A thread's view reads its header, then
//! `Communication?part-of=Communication/<id>&_sort=sent`.
//!
//! Writes: a patient may write to a participant member of one of their active
//! CareTeams, to such a CareTeam itself, or to a reference in the profile's
//! `messages.recipient_pool`; anything else is `recipient_not_allowed`. Starting a thread
//! creates the header (`idem.step("header")`) and then the first message
//! (`idem.step("message")`): when the message fails after the header was created the
//! answer is [`PortalError::Partial`] `message_not_sent` naming the thread, and a retry
//! with the same key finds the same header (`If-None-Exist`) and sends the message once.
//!
//! Strategy `unsupported` (Cerner: Communication is a clinician inbox, not readable or
//! writable with patient context) answers every route, reads included, with
//! `not_supported_by_ehr`.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use portico_fhir::reference::Reference;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::careteam;
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::input::Text;
use crate::me::display_name;
use crate::profile::{MessageStrategy, MessagesProfile};
use crate::view::{array, parse_datetime, reference_of, str_at};

/// The longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;
/// The longest snippet of the last message in the thread list, in characters.
pub const SNIPPET_CHARS: usize = 140;
/// The most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 5;
/// The most threads listed.
pub const MAX_THREADS: usize = 200;
/// How many threads' messages one search asks for (an OR list of `part-of`).
pub const OR_CHUNK: usize = 40;
/// The most messages read for one thread.
pub const MAX_MESSAGES: usize = 1000;
/// The most Communications (headers and messages) the one-search thread listing
/// collects; with more, headers and messages are searched apart.
pub const COMBINED_BOUND: usize = 500;
/// The page size asked for by the one-search thread listing.
const COMBINED_PAGE: usize = 200;
/// The most distinct participants whose names are looked up for one answer.
const MAX_NAME_LOOKUPS: usize = 32;

/// Types a patient may address a message to.
const RECIPIENT_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "CareTeam",
    "Organization",
    "Group",
];

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
    fn of(header: &Value) -> ThreadStatus {
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

// ---------------------------------------------------------------------------------
// Validation (pure)

/// A message's content, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    pub text: String,
    /// FHIR `Attachment`s, ready for `payload.contentAttachment`.
    pub attachments: Vec<Value>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> PortalError {
    PortalError::Invalid {
        code,
        message: message.into(),
    }
}

/// A thread's topic: one line of text ([`crate::input::Text::one_line`]).
const TOPIC: Text = Text::new("topic", MAX_TOPIC_CHARS)
    .one_line()
    .blank_code("topic_required")
    .too_long_code("topic_too_long")
    .control_code("invalid_topic");

/// An attachment's title: one line of text, optional.
const ATTACHMENT_TITLE: Text = Text::new("attachment title", MAX_TOPIC_CHARS)
    .one_line()
    .too_long_code("invalid_attachment")
    .control_code("invalid_attachment");

/// Checks a topic: 1 to 200 characters after trimming, one line.
pub fn check_topic(topic: &str) -> PortalResult<String> {
    TOPIC.required(topic)
}

/// Checks a message's text and attachments against the profile.
pub fn check_content(
    profile: &MessagesProfile,
    text: &str,
    attachments: &[NewAttachment],
    now: DateTime<Utc>,
) -> PortalResult<Content> {
    let text = Text::new("text", profile.max_text_chars)
        .blank_code("text_required")
        .required(text)?;
    if attachments.len() > MAX_ATTACHMENTS {
        return Err(invalid(
            "too_many_attachments",
            format!("at most {MAX_ATTACHMENTS} attachments per message"),
        ));
    }
    let mut out = Vec::with_capacity(attachments.len());
    for a in attachments {
        let content_type = a.content_type.trim().to_ascii_lowercase();
        if !profile
            .attachment_types
            .iter()
            .any(|t| t.eq_ignore_ascii_case(&content_type))
        {
            return Err(PortalError::Refused {
                code: "attachment_type_not_allowed",
                message: if profile.attachment_types.is_empty() {
                    "this EHR accepts no attachments".to_owned()
                } else {
                    format!(
                        "attachments must be one of: {}",
                        profile.attachment_types.join(", ")
                    )
                },
                detail: Some(json!({ "allowed": profile.attachment_types })),
            });
        }
        // The decoded size is at most 3/4 of the encoded length: refuse early, before
        // decoding something huge.
        if a.data.len() / 4 * 3 > profile.max_attachment_bytes + 3 {
            return Err(too_large(profile));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(a.data.trim())
            .map_err(|_| {
                invalid(
                    "invalid_attachment",
                    "attachment data must be standard base64",
                )
            })?;
        if bytes.is_empty() {
            return Err(invalid("invalid_attachment", "an attachment is empty"));
        }
        if bytes.len() > profile.max_attachment_bytes {
            return Err(too_large(profile));
        }
        let title = ATTACHMENT_TITLE.optional(a.title.as_deref())?;
        let mut attachment = json!({
            "contentType": content_type,
            "data": base64::engine::general_purpose::STANDARD.encode(&bytes),
            "size": bytes.len(),
            "creation": crate::view::instant(now),
        });
        if let Some(t) = title {
            attachment["title"] = Value::String(t);
        }
        out.push(attachment);
    }
    Ok(Content {
        text,
        attachments: out,
    })
}

fn too_large(profile: &MessagesProfile) -> PortalError {
    PortalError::Refused {
        code: "attachment_too_large",
        message: format!(
            "an attachment is larger than {} bytes",
            profile.max_attachment_bytes
        ),
        detail: Some(json!({ "max_bytes": profile.max_attachment_bytes })),
    }
}

/// Parses a recipient: a literal relative reference to a type a patient may write to.
pub fn parse_recipient(recipient: &str) -> PortalResult<Reference> {
    let refused = || {
        PortalError::refused(
            "recipient_not_allowed",
            "you cannot send messages to this recipient",
        )
    };
    let r = Reference::parse(recipient.trim()).map_err(|_| {
        invalid(
            "invalid_recipient",
            "the recipient must be a reference such as Practitioner/123",
        )
    })?;
    if r.base.is_some() || r.version.is_some() {
        return Err(invalid(
            "invalid_recipient",
            "the recipient must be a relative reference such as Practitioner/123",
        ));
    }
    if !RECIPIENT_TYPES.contains(&r.resource_type.as_str()) {
        return Err(refused());
    }
    Ok(r)
}

/// Whether `recipient` is allowed: in the pool, one of `care_teams` (the patient's
/// active CareTeams), or a participant member of one of them ([`careteam::includes`]).
pub fn recipient_allowed(recipient: &Reference, pool: &[String], care_teams: &[Value]) -> bool {
    let pooled = pool.iter().any(|p| {
        Reference::parse(p)
            .is_ok_and(|r| r.base.is_none() && r.is(&recipient.resource_type, &recipient.id))
    });
    pooled || careteam::includes(care_teams, recipient)
}

// ---------------------------------------------------------------------------------
// Reading

fn ensure_supported(ctx: &Ctx<'_>) -> PortalResult<()> {
    match ctx.profile().messages.strategy {
        MessageStrategy::Communication => Ok(()),
        MessageStrategy::Unsupported => Err(PortalError::not_supported(
            "this EHR offers no patient messaging over FHIR",
        )),
    }
}

/// Whether a resource is a Communication: only those are thread headers or messages.
/// An EHR that leaves out `search.mode` puts the resources a search `_include`s among
/// its matches; they are names for the participants, never threads.
fn is_communication(r: &Value) -> bool {
    str_at(r, "resourceType") == Some("Communication")
}

/// A header is a Communication without `partOf` and without `payload`.
fn is_header(c: &Value) -> bool {
    is_communication(c)
        && array(c, "partOf").next().is_none()
        && array(c, "payload").next().is_none()
}

fn sent_at(c: &Value) -> Option<DateTime<Utc>> {
    str_at(c, "sent").and_then(parse_datetime)
}

fn text_of(c: &Value) -> Option<String> {
    let parts: Vec<&str> = array(c, "payload")
        .filter_map(|p| str_at(p, "contentString"))
        .collect();
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

fn attachments_of(c: &Value) -> Vec<AttachmentInfo> {
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

fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= SNIPPET_CHARS {
        return flat;
    }
    let mut s: String = flat.chars().take(SNIPPET_CHARS - 1).collect();
    s.push('…');
    s
}

fn is_patient_ref(reference: &Value, patient: &str) -> bool {
    reference_of(reference)
        .and_then(|r| Reference::parse(r).ok())
        .is_some_and(|r| r.is("Patient", patient))
}

/// Whether a message is to the patient and not yet received.
fn unread(c: &Value, patient: &str) -> bool {
    c.get("received").is_none()
        && !c.get("sender").is_some_and(|s| is_patient_ref(s, patient))
        && array(c, "recipient").any(|r| is_patient_ref(r, patient))
}

/// Looks up display names of references, once each, through the Ctx (so only what the
/// patient may read is read); falls back to the reference's own `display`.
struct Names<'c, 'a> {
    ctx: &'c Ctx<'a>,
    known: HashMap<String, Option<String>>,
}

impl<'c, 'a> Names<'c, 'a> {
    fn new(ctx: &'c Ctx<'a>) -> Self {
        Names {
            ctx,
            known: HashMap::new(),
        }
    }

    async fn participant(&mut self, reference: &Value) -> Option<Participant> {
        let literal = reference_of(reference)?;
        let parsed = Reference::parse(literal).ok()?;
        let is_me = parsed.is("Patient", self.ctx.patient());
        let key = parsed.relative();
        let display = match self.known.get(&key) {
            Some(d) => d.clone(),
            None => {
                let looked_up = if self.known.len() < MAX_NAME_LOOKUPS {
                    self.look_up(&parsed).await
                } else {
                    None
                };
                let d = looked_up.or_else(|| str_at(reference, "display").map(str::to_owned));
                self.known.insert(key.clone(), d.clone());
                d
            }
        };
        Some(Participant {
            reference: key,
            display,
            is_me,
        })
    }

    async fn look_up(&self, r: &Reference) -> Option<String> {
        look_up(self.ctx, r).await
    }

    /// Learns the names of these references other than the acting patient's all at
    /// once: from the included resources (which the [`Ctx`] verified like reads), else
    /// read — at the same time, at most [`MAX_NAME_LOOKUPS`] of them — else the
    /// reference's `display` where it first appears. [`Names::participant`] then answers
    /// them without a call.
    async fn learn<'v>(
        &mut self,
        references: impl IntoIterator<Item = &'v Value>,
        included: &[Value],
    ) {
        let patient = self.ctx.patient();
        // Distinct references in order of appearance, with their first `display`.
        let mut seen: Vec<(Reference, Option<&str>)> = Vec::new();
        for r in references {
            let Some(parsed) = reference_of(r).and_then(|l| Reference::parse(l).ok()) else {
                continue;
            };
            if parsed.is("Patient", patient)
                || self.known.contains_key(&parsed.relative())
                || seen.iter().any(|(s, _)| s.relative() == parsed.relative())
            {
                continue;
            }
            seen.push((parsed, str_at(r, "display")));
        }
        let from_include = |r: &Reference| -> Option<Option<String>> {
            if !named_type(&r.resource_type) {
                return Some(None);
            }
            included
                .iter()
                .find(|v| {
                    str_at(v, "resourceType") == Some(r.resource_type.as_str())
                        && str_at(v, "id") == Some(r.id.as_str())
                })
                .map(|v| name_of(&r.resource_type, v))
        };
        let mut names: Vec<Option<Option<String>>> =
            seen.iter().map(|(r, _)| from_include(r)).collect();
        let to_read: Vec<usize> = (0..seen.len())
            .filter(|&i| names[i].is_none())
            .take(MAX_NAME_LOOKUPS)
            .collect();
        let read =
            futures::future::join_all(to_read.iter().map(|&i| self.look_up(&seen[i].0))).await;
        for (i, name) in to_read.into_iter().zip(read) {
            names[i] = Some(name);
        }
        for ((r, display), name) in seen.into_iter().zip(names) {
            let name = name.flatten().or_else(|| display.map(str::to_owned));
            self.known.insert(r.relative(), name);
        }
    }
}

/// Whether a participant of this type has a name worth looking up.
fn named_type(resource_type: &str) -> bool {
    matches!(
        resource_type,
        "Patient" | "Practitioner" | "CareTeam" | "Organization" | "Group"
    )
}

/// The name of a participant's resource.
fn name_of(resource_type: &str, resource: &Value) -> Option<String> {
    match resource_type {
        "Patient" | "Practitioner" => display_name(resource),
        _ => str_at(resource, "name").map(str::to_owned),
    }
}

/// Reads a participant's name through the Ctx (only what the patient may read).
async fn look_up(ctx: &Ctx<'_>, r: &Reference) -> Option<String> {
    if !named_type(&r.resource_type) {
        return None;
    }
    let resource = ctx.read(&r.resource_type, &r.id).await.ok()?.resource;
    name_of(&r.resource_type, &resource)
}

async fn message_view(names: &mut Names<'_, '_>, c: &Value, patient: &str) -> MessageView {
    let sender = match c.get("sender") {
        Some(s) => names.participant(s).await,
        None => None,
    };
    MessageView {
        id: str_at(c, "id").unwrap_or_default().to_owned(),
        sender,
        sent: str_at(c, "sent").map(str::to_owned),
        text: text_of(c),
        attachments: attachments_of(c),
        in_response_to: array(c, "inResponseTo")
            .find_map(reference_of)
            .map(str::to_owned),
        read: !unread(c, patient),
    }
}

/// The patient's threads as found upstream: headers, their messages by thread id, the
/// resources included with them (participants) and staleness.
struct Threads {
    headers: Vec<Value>,
    by_thread: BTreeMap<String, Vec<Value>>,
    included: Vec<Value>,
    stale: bool,
}

/// The thread a message belongs to: the id of its first `partOf` Communication.
fn thread_of(message: &Value) -> Option<String> {
    array(message, "partOf")
        .filter_map(reference_of)
        .filter_map(|r| Reference::parse(r).ok())
        .find(|r| r.resource_type == "Communication")
        .map(|r| r.id)
}

/// Sorts a search's matches into thread headers (in the order given) and the messages
/// of each thread. A header is a Communication of the patient's (`subject`), with
/// neither `partOf` nor `payload`; any other Communication with a `partOf` thread is a
/// message of that thread; a resource of another type is neither, and goes to
/// `included` (an included resource whose entry lacked `search.mode`: used for names,
/// like the included ones). Not stale: the caller knows.
fn group(patient: &str, matches: Vec<Value>) -> Threads {
    let mut grouped = Threads {
        headers: Vec::new(),
        by_thread: BTreeMap::new(),
        included: Vec::new(),
        stale: false,
    };
    for c in matches {
        if !is_communication(&c) {
            grouped.included.push(c);
        } else if is_header(&c) {
            if c.get("subject").is_some_and(|s| is_patient_ref(s, patient)) {
                grouped.headers.push(c);
            }
        } else if let Some(thread) = thread_of(&c) {
            grouped.by_thread.entry(thread).or_default().push(c);
        }
    }
    grouped
}

/// Every Communication of the patient's in one search (headers and messages together,
/// header recipients included), grouped here. `None` when the answer is not whole (more
/// than [`COMBINED_BOUND`], or more than [`MAX_THREADS`] threads, which the header
/// search would have cut) or the EHR refuses the query.
async fn threads_in_one_search(ctx: &Ctx<'_>) -> PortalResult<Option<Threads>> {
    let params = [
        ("_sort", "sent".to_owned()),
        ("_include", "Communication:recipient".to_owned()),
        ("_count", COMBINED_PAGE.to_string()),
    ];
    let page =
        match crate::whole::search_whole(*ctx, "Communication", &params, COMBINED_BOUND).await {
            Ok(Some(page)) => page,
            Ok(None) => return Ok(None),
            Err(e) if crate::whole::refused_query(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
    let mut threads = group(ctx.patient(), page.matches);
    if threads.headers.len() > MAX_THREADS {
        return Ok(None);
    }
    threads.included.extend(page.included);
    threads.stale = page.stale;
    Ok(Some(threads))
}

/// The headers (`subject` the patient, `part-of:missing`), then the messages of up to
/// [`OR_CHUNK`] threads per search (the chunks at the same time).
async fn threads_by_header(ctx: &Ctx<'_>) -> PortalResult<Threads> {
    let patient = ctx.patient();
    let headers = ctx
        .search_all(
            "Communication",
            &[
                ("subject", format!("Patient/{patient}")),
                ("part-of:missing", "true".to_owned()),
            ],
            MAX_THREADS,
        )
        .await?;
    let mut stale = headers.stale;
    let headers: Vec<Value> = headers.matches.into_iter().filter(is_header).collect();
    let ids: Vec<&str> = headers.iter().filter_map(|h| str_at(h, "id")).collect();
    let searches = ids.chunks(OR_CHUNK).map(|chunk| {
        let list = chunk
            .iter()
            .map(|id| format!("Communication/{id}"))
            .collect::<Vec<_>>()
            .join(",");
        async move {
            ctx.search_all(
                "Communication",
                &[("part-of", list), ("_sort", "sent".to_owned())],
                crate::context::MAX_COLLECTED,
            )
            .await
        }
    });
    let mut by_thread: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for page in futures::future::join_all(searches).await {
        let page = page?;
        stale |= page.stale;
        for m in page.matches.into_iter().filter(is_communication) {
            if let Some(t) = thread_of(&m) {
                by_thread.entry(t).or_default().push(m);
            }
        }
    }
    Ok(Threads {
        headers,
        by_thread,
        included: Vec::new(),
        stale,
    })
}

/// `GET /messages/threads`: one round trip in the usual case (`threads_in_one_search`,
/// with the participants' names included); the header-then-messages searches when that
/// answer is not whole.
pub async fn list_threads(ctx: Ctx<'_>) -> PortalResult<ThreadList> {
    ensure_supported(&ctx)?;
    let patient = ctx.patient();
    let Threads {
        headers,
        mut by_thread,
        included,
        stale,
    } = match threads_in_one_search(&ctx).await? {
        Some(threads) => threads,
        None => threads_by_header(&ctx).await?,
    };
    let mut names = Names::new(&ctx);
    names
        .learn(
            headers.iter().flat_map(|h| array(h, "recipient")),
            &included,
        )
        .await;
    let mut threads = Vec::with_capacity(headers.len());
    for h in &headers {
        let id = str_at(h, "id").unwrap_or_default().to_owned();
        let mut messages = by_thread.remove(&id).unwrap_or_default();
        messages.sort_by_key(sent_at);
        let last = messages.last();
        let mut participants = Vec::new();
        for r in array(h, "recipient") {
            if is_patient_ref(r, patient) {
                continue;
            }
            let Some(participant) = names.participant(r).await else {
                continue;
            };
            let shown = participant.display.unwrap_or(participant.reference);
            if !participants.contains(&shown) {
                participants.push(shown);
            }
        }
        threads.push(ThreadSummary {
            topic: h.get("topic").and_then(crate::view::concept_text),
            status: ThreadStatus::of(h),
            participants,
            last_message_at: last
                .and_then(|m| str_at(m, "sent"))
                .or_else(|| str_at(h, "sent"))
                .map(str::to_owned),
            snippet: last.and_then(text_of).map(|t| snippet(&t)),
            message_count: messages.len(),
            unread: messages.iter().filter(|m| unread(m, patient)).count(),
            id,
        });
    }
    threads.sort_by(|a, b| {
        let key = |t: &ThreadSummary| t.last_message_at.as_deref().and_then(parse_datetime);
        key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
    });
    Ok(ThreadList { threads, stale })
}

/// Reads a thread header of the patient's (404 for anything else, messages included).
async fn read_header(ctx: &Ctx<'_>, id: &str) -> PortalResult<crate::context::Versioned> {
    let header = ctx.read("Communication", id).await?;
    if !is_header(&header.resource) {
        return Err(PortalError::NotFound);
    }
    Ok(header)
}

async fn thread_messages(ctx: &Ctx<'_>, id: &str) -> PortalResult<(Vec<Value>, bool)> {
    let page = ctx
        .search_all(
            "Communication",
            &[
                ("part-of", format!("Communication/{id}")),
                ("_sort", "sent".to_owned()),
            ],
            MAX_MESSAGES,
        )
        .await?;
    let mut messages: Vec<Value> = page.matches.into_iter().filter(is_communication).collect();
    messages.sort_by_key(sent_at);
    Ok((messages, page.stale))
}

async fn thread_view(ctx: &Ctx<'_>, header: &Value, messages: &[Value], stale: bool) -> ThreadView {
    let patient = ctx.patient();
    let mut names = Names::new(ctx);
    let mut participants = Vec::new();
    for r in array(header, "recipient") {
        if let Some(p) = names.participant(r).await
            && !participants
                .iter()
                .any(|q: &Participant| q.reference == p.reference)
        {
            participants.push(p);
        }
    }
    let mut views = Vec::with_capacity(messages.len());
    for m in messages {
        views.push(message_view(&mut names, m, patient).await);
    }
    ThreadView {
        id: str_at(header, "id").unwrap_or_default().to_owned(),
        topic: header.get("topic").and_then(crate::view::concept_text),
        status: ThreadStatus::of(header),
        participants,
        started: str_at(header, "sent").map(str::to_owned),
        messages: views,
        stale,
    }
}

/// `GET /messages/threads/{id}`.
pub async fn read_thread(ctx: Ctx<'_>, id: &str) -> PortalResult<ThreadView> {
    ensure_supported(&ctx)?;
    let header = read_header(&ctx, id).await?;
    let (messages, stale) = thread_messages(&ctx, id).await?;
    Ok(thread_view(
        &ctx,
        &header.resource,
        &messages,
        stale || header.stale.is_some(),
    )
    .await)
}

// ---------------------------------------------------------------------------------
// Writing

/// The header of a new thread.
pub fn header_body(patient: &str, recipient: &Reference, topic: &str, now: DateTime<Utc>) -> Value {
    let me = json!({ "reference": format!("Patient/{patient}") });
    json!({
        "resourceType": "Communication",
        "status": "in-progress",
        "topic": { "text": topic },
        "subject": me,
        "sender": me,
        "recipient": [me, { "reference": recipient.relative() }],
        "sent": crate::view::instant(now),
    })
}

/// A message of a thread.
pub fn message_body(
    patient: &str,
    thread_id: &str,
    in_response_to: Option<&str>,
    recipients: &[Value],
    topic: Option<&Value>,
    content: &Content,
    now: DateTime<Utc>,
) -> Value {
    let me = json!({ "reference": format!("Patient/{patient}") });
    let mut payload = vec![json!({ "contentString": content.text })];
    payload.extend(
        content
            .attachments
            .iter()
            .map(|a| json!({ "contentAttachment": a })),
    );
    let mut body = json!({
        "resourceType": "Communication",
        "status": "completed",
        "partOf": [{ "reference": format!("Communication/{thread_id}") }],
        "subject": me,
        "sender": me,
        "recipient": recipients,
        "sent": crate::view::instant(now),
        "payload": payload,
    });
    if let Some(previous) = in_response_to {
        body["inResponseTo"] = json!([{ "reference": format!("Communication/{previous}") }]);
    }
    if let Some(topic) = topic {
        body["topic"] = topic.clone();
    }
    body
}

/// `POST /messages/threads`.
pub async fn start_thread(ctx: Ctx<'_>, new: &NewThread, idem: &Idem) -> PortalResult<ThreadView> {
    ensure_supported(&ctx)?;
    let profile = &ctx.profile().messages;
    let now = ctx.now();
    let topic = check_topic(&new.topic)?;
    let content = check_content(profile, &new.text, &new.attachments, now)?;
    let recipient = parse_recipient(&new.recipient)?;
    let patient = ctx.patient();
    let teams = careteam::active(ctx).await?;
    if !recipient_allowed(&recipient, &profile.recipient_pool, &teams) {
        return Err(PortalError::refused(
            "recipient_not_allowed",
            "you can only write to members of your care team",
        ));
    }
    let header = ctx
        .create(
            "Communication",
            header_body(patient, &recipient, &topic, now),
            &idem.step("header"),
        )
        .await?;
    let thread_id = header
        .id()
        .ok_or_else(|| {
            PortalError::Upstream(portico_upstream::UpstreamError::Protocol {
                detail: "the EHR returned a Communication without an id".to_owned(),
            })
        })?
        .to_owned();
    let body = message_body(
        patient,
        &thread_id,
        None,
        &[json!({ "reference": recipient.relative() })],
        header.resource.get("topic"),
        &content,
        now,
    );
    let message = match ctx
        .create("Communication", body, &idem.step("message"))
        .await
    {
        Ok(m) => m,
        Err(e) => {
            let unknown = matches!(e, PortalError::OutcomeUnknown { .. });
            tracing::warn!(error = %e, "thread started but its first message failed");
            return Err(PortalError::Partial {
                code: "message_not_sent",
                message: if unknown {
                    "the conversation was started but it is not known whether your message \
                     was sent; retry with the same Idempotency-Key to finish it"
                } else {
                    "the conversation was started but your message was not sent; retry \
                     with the same Idempotency-Key to send it"
                }
                .to_owned(),
                state: json!({
                    "thread_id": thread_id,
                    "thread_created": true,
                    "message_sent": if unknown { Value::from("unknown") } else { Value::from(false) },
                }),
            });
        }
    };
    Ok(thread_view(&ctx, &header.resource, &[message.resource], false).await)
}

/// `POST /messages/threads/{id}/replies`.
pub async fn reply(
    ctx: Ctx<'_>,
    thread_id: &str,
    new: &NewReply,
    idem: &Idem,
) -> PortalResult<MessageView> {
    ensure_supported(&ctx)?;
    let profile = &ctx.profile().messages;
    let now = ctx.now();
    let content = check_content(profile, &new.text, &new.attachments, now)?;
    let patient = ctx.patient();
    // Two replies at once must not both answer the same message.
    let _guard = ctx.portal.lock(&format!("thread:{thread_id}")).await;
    let header = read_header(&ctx, thread_id).await?;
    if ThreadStatus::of(&header.resource) != ThreadStatus::Open {
        return Err(PortalError::refused(
            "thread_closed",
            "this conversation is closed; start a new one",
        ));
    }
    let recipients: Vec<Value> = array(&header.resource, "recipient")
        .filter(|r| !is_patient_ref(r, patient))
        .filter_map(|r| reference_of(r).map(|s| json!({ "reference": s })))
        .collect();
    if recipients.is_empty() {
        return Err(PortalError::refused(
            "recipient_not_allowed",
            "this conversation has no one to reply to",
        ));
    }
    let (messages, _) = thread_messages(&ctx, thread_id).await?;
    let previous = messages.last().and_then(|m| str_at(m, "id"));
    let body = message_body(
        patient,
        thread_id,
        previous,
        &recipients,
        header.resource.get("topic"),
        &content,
        now,
    );
    // A key reused for another thread must not find this one's message upstream.
    let message = ctx
        .create(
            "Communication",
            body,
            &idem.step(&format!("reply\n{thread_id}")),
        )
        .await?;
    let mut names = Names::new(&ctx);
    Ok(message_view(&mut names, &message.resource, patient).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn profile() -> MessagesProfile {
        MessagesProfile {
            strategy: MessageStrategy::Communication,
            recipient_pool: vec!["Organization/front-desk".to_owned()],
            max_text_chars: 10,
            attachment_types: vec!["image/png".to_owned()],
            max_attachment_bytes: 4,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 7, 1, 10, 0, 0).unwrap()
    }

    fn att(content_type: &str, data: &str) -> NewAttachment {
        NewAttachment {
            content_type: content_type.to_owned(),
            title: Some("scan".to_owned()),
            data: data.to_owned(),
        }
    }

    #[test]
    fn text_and_topic_are_bounded() {
        let p = profile();
        assert_eq!(check_content(&p, "  hi  ", &[], now()).unwrap().text, "hi");
        assert_eq!(
            check_content(&p, "   ", &[], now()).unwrap_err().code(),
            "text_required"
        );
        assert_eq!(
            check_content(&p, "01234567890", &[], now())
                .unwrap_err()
                .code(),
            "text_too_long"
        );
        // Characters, not bytes.
        assert!(check_content(&p, "éééééééééé", &[], now()).is_ok());
        assert!(check_topic("Lab results").is_ok());
        assert_eq!(check_topic(" ").unwrap_err().code(), "topic_required");
        assert_eq!(
            check_topic(&"x".repeat(201)).unwrap_err().code(),
            "topic_too_long"
        );
        assert!(check_topic(&"x".repeat(200)).is_ok());
        assert_eq!(check_topic("a\nb").unwrap_err().code(), "invalid_topic");
    }

    #[test]
    fn attachments_are_checked_for_type_size_and_encoding() {
        let p = profile();
        let ok = check_content(&p, "hi", &[att("IMAGE/PNG", "AQID")], now()).unwrap();
        assert_eq!(ok.attachments[0]["size"], 3);
        assert_eq!(ok.attachments[0]["contentType"], "image/png");
        assert_eq!(ok.attachments[0]["title"], "scan");
        assert_eq!(
            check_content(&p, "hi", &[att("application/x-sh", "AQID")], now())
                .unwrap_err()
                .code(),
            "attachment_type_not_allowed"
        );
        assert_eq!(
            check_content(&p, "hi", &[att("image/png", "AQIDBAU=")], now())
                .unwrap_err()
                .code(),
            "attachment_too_large"
        );
        assert_eq!(
            check_content(&p, "hi", &[att("image/png", &"A".repeat(10_000))], now())
                .unwrap_err()
                .code(),
            "attachment_too_large"
        );
        assert_eq!(
            check_content(&p, "hi", &[att("image/png", "not base64!")], now())
                .unwrap_err()
                .code(),
            "invalid_attachment"
        );
        let six: Vec<NewAttachment> = (0..6).map(|_| att("image/png", "AQID")).collect();
        assert_eq!(
            check_content(&p, "hi", &six, now()).unwrap_err().code(),
            "too_many_attachments"
        );
    }

    #[test]
    fn recipients_must_be_care_team_members_the_team_or_pooled() {
        let teams = vec![
            json!({
                "resourceType": "CareTeam", "id": "ct-1", "status": "active",
                "participant": [{"member": {"reference": "Practitioner/pr-1"}},
                                {"member": {"reference": "Practitioner/pr-2", "display": "Dr B"}}]
            }),
            // Not a CareTeam: its participants are nobody's care team.
            json!({
                "resourceType": "Group", "id": "g-1",
                "participant": [{"member": {"reference": "Practitioner/pr-9"}}]
            }),
        ];
        let pool = profile().recipient_pool;
        let ok = |s: &str| recipient_allowed(&parse_recipient(s).unwrap(), &pool, &teams);
        assert!(ok("Practitioner/pr-1"));
        assert!(ok("Practitioner/pr-2"));
        assert!(ok("CareTeam/ct-1"));
        assert!(ok("Organization/front-desk"));
        // Prefixes and other ids are not members.
        assert!(!ok("Practitioner/pr-12"));
        assert!(!ok("Practitioner/pr"));
        assert!(!ok("CareTeam/ct-2"));
        assert!(!ok("Organization/other"));
        assert!(!ok("Practitioner/pr-9"));
        assert_eq!(
            parse_recipient("Patient/pat-2").unwrap_err().code(),
            "recipient_not_allowed"
        );
        assert_eq!(
            parse_recipient("http://evil/fhir/Practitioner/pr-1")
                .unwrap_err()
                .code(),
            "invalid_recipient"
        );
        assert_eq!(
            parse_recipient("nobody").unwrap_err().code(),
            "invalid_recipient"
        );
    }

    #[test]
    fn bodies_follow_the_thread_convention() {
        let r = Reference::new("Practitioner", "pr-1");
        let h = header_body("pat-1", &r, "Lab results", now());
        assert!(is_header(&h));
        assert_eq!(h["status"], "in-progress");
        assert_eq!(h["sender"]["reference"], "Patient/pat-1");
        let content = Content {
            text: "hello".to_owned(),
            attachments: vec![],
        };
        let m = message_body(
            "pat-1",
            "hdr",
            Some("m1"),
            &[json!({"reference": "Practitioner/pr-1"})],
            h.get("topic"),
            &content,
            now(),
        );
        assert!(!is_header(&m));
        assert_eq!(m["partOf"][0]["reference"], "Communication/hdr");
        assert_eq!(m["inResponseTo"][0]["reference"], "Communication/m1");
        assert_eq!(m["payload"][0]["contentString"], "hello");
        assert_eq!(m["sent"], "2025-07-01T10:00:00Z");
    }

    #[test]
    fn unread_is_a_message_to_the_patient_without_received() {
        let to_me = json!({"sender": {"reference": "Practitioner/pr-1"},
                           "recipient": [{"reference": "Patient/pat-1"}]});
        assert!(unread(&to_me, "pat-1"));
        assert!(!unread(&to_me, "pat-11"));
        let mut received = to_me.clone();
        received["received"] = json!("2025-07-01T10:00:00Z");
        assert!(!unread(&received, "pat-1"));
        let mine = json!({"sender": {"reference": "Patient/pat-1"},
                          "recipient": [{"reference": "Patient/pat-1"}]});
        assert!(!unread(&mine, "pat-1"));
    }

    #[test]
    fn one_search_is_grouped_into_the_patients_headers_and_their_messages() {
        let header = |id: &str, patient: &str| {
            json!({"resourceType": "Communication", "id": id, "status": "in-progress",
                   "subject": {"reference": format!("Patient/{patient}")}})
        };
        let message = |id: &str, thread: &str| {
            json!({"resourceType": "Communication", "id": id,
                   "subject": {"reference": "Patient/pat-1"},
                   "partOf": [{"reference": format!("Communication/{thread}")}],
                   "payload": [{"contentString": id}]})
        };
        let all = vec![
            message("m2", "h1"),
            header("h1", "pat-1"),
            message("m1", "h2"),
            // Another patient's header (an EHR that ignored the narrowing).
            header("h3", "pat-11"),
            header("h2", "pat-1"),
            message("m3", "h1"),
            // A payload without partOf (a refill request) is neither.
            json!({"resourceType": "Communication", "id": "r1",
                   "subject": {"reference": "Patient/pat-1"},
                   "payload": [{"contentString": "refill"}]}),
            // Included resources of an EHR that left out `search.mode`: a CareTeam of
            // the patient's looks like a header, a Practitioner like nothing; both are
            // names, never threads.
            json!({"resourceType": "CareTeam", "id": "ct1", "status": "active",
                   "subject": {"reference": "Patient/pat-1"}, "name": "Heart team"}),
            json!({"resourceType": "Practitioner", "id": "pr1",
                   "partOf": [{"reference": "Communication/h1"}]}),
        ];
        let Threads {
            headers,
            by_thread,
            included: others,
            ..
        } = group("pat-1", all);
        let others: Vec<&str> = others.iter().filter_map(|o| str_at(o, "id")).collect();
        assert_eq!(others, ["ct1", "pr1"]);
        let ids: Vec<&str> = headers.iter().filter_map(|h| str_at(h, "id")).collect();
        assert_eq!(ids, ["h1", "h2"]);
        let ids_of = |t: &str| -> Vec<String> {
            by_thread[t]
                .iter()
                .filter_map(|m| str_at(m, "id").map(str::to_owned))
                .collect()
        };
        assert_eq!(ids_of("h1"), ["m2", "m3"]);
        assert_eq!(ids_of("h2"), ["m1"]);
        assert_eq!(by_thread.len(), 2);
    }

    #[test]
    fn snippets_are_at_most_140_characters() {
        assert_eq!(snippet("a  b\nc"), "a b c");
        let long = snippet(&"é".repeat(300));
        assert_eq!(long.chars().count(), SNIPPET_CHARS);
        assert!(long.ends_with('…'));
    }
}
