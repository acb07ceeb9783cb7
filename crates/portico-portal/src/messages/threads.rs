//! Reading threads.
//!
//! The thread list is one search of all the patient's Communications
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

use std::collections::BTreeMap;

use portico_fhir::reference::Reference;
use serde_json::Value;

use super::ensure_supported;
use super::names::Names;
use super::views::{
    MessageView, Participant, ThreadList, ThreadStatus, ThreadSummary, ThreadView, attachments_of,
    is_communication, is_header, is_patient_ref, sent_at, snippet, text_of, unread,
};
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::view::{array, parse_datetime, reference_of, str_at};

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

pub(super) async fn message_view(
    names: &mut Names<'_, '_>,
    c: &Value,
    patient: &str,
) -> MessageView {
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
pub(super) struct Threads {
    pub(super) headers: Vec<Value>,
    pub(super) by_thread: BTreeMap<String, Vec<Value>>,
    pub(super) included: Vec<Value>,
    pub(super) stale: bool,
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
pub(super) fn group(patient: &str, matches: Vec<Value>) -> Threads {
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
pub(super) async fn read_header(
    ctx: &Ctx<'_>,
    id: &str,
) -> PortalResult<crate::context::Versioned> {
    let header = ctx.read("Communication", id).await?;
    if !is_header(&header.resource) {
        return Err(PortalError::NotFound);
    }
    Ok(header)
}

pub(super) async fn thread_messages(ctx: &Ctx<'_>, id: &str) -> PortalResult<(Vec<Value>, bool)> {
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

pub(super) async fn thread_view(
    ctx: &Ctx<'_>,
    header: &Value,
    messages: &[Value],
    stale: bool,
) -> ThreadView {
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
