//! `/messages/threads`: secure messages with the care team (list, read, start, reply).
//!
//! The domain rules (thread convention, who may be written to, attachment limits) are in
//! [`portico_portal::messages`]; writes run through [`super::Idempotent`].

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use portico_portal::messages::{self, MessageView, NewReply, NewThread, ThreadList, ThreadView};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Idempotent, PatientCaller, ProblemResult, ctx, json_body};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_threads, start_thread))
        .routes(routes!(read_thread))
        .routes(routes!(reply_in_thread))
}

/// The patient's message threads, most recently active first.
#[utoipa::path(
    get,
    path = "/messages/threads",
    tag = "messages",
    responses(
        (status = 200, description = "The threads", body = ThreadList),
        super::ReadErrors,
        (status = 501, description = "The EHR offers no patient messaging (`not_supported_by_ehr`)", body = super::Problem),
    )
)]
async fn list_threads(
    State(state): State<AppState>,
    caller: PatientCaller,
) -> ProblemResult<Json<ThreadList>> {
    Ok(Json(messages::list_threads(ctx(&state, &caller)).await?))
}

/// One thread with its messages, oldest first (attachments are described, not sent).
#[utoipa::path(
    get,
    path = "/messages/threads/{id}",
    tag = "messages",
    params(("id" = String, Path, description = "The thread (header Communication) id")),
    responses(
        (status = 200, description = "The thread", body = ThreadView),
        super::ReadErrors,
        (status = 404, description = "No such thread of the patient's", body = super::Problem),
        (status = 501, description = "The EHR offers no patient messaging (`not_supported_by_ehr`)", body = super::Problem),
    )
)]
async fn read_thread(
    State(state): State<AppState>,
    caller: PatientCaller,
    Path(id): Path<String>,
) -> ProblemResult<Json<ThreadView>> {
    Ok(Json(
        messages::read_thread(ctx(&state, &caller), &id).await?,
    ))
}

/// Starts a thread: its header, then the first message. Send an `Idempotency-Key`: a
/// retry after a failure completes the same thread instead of starting another.
#[utoipa::path(
    post,
    path = "/messages/threads",
    tag = "messages",
    request_body = NewThread,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once")),
    responses(
        (status = 201, description = "The new thread", body = ThreadView),
        super::WriteErrors,
        super::BodyTooLarge,
        (status = 400, description = "Bad body: empty or too long text or topic (`text_too_long`, ...), attachment not base64 (`invalid_attachment`), bad recipient reference (`invalid_recipient`)", body = super::Problem),
        (status = 403, description = "The login may not write messages", body = super::Problem),
        (status = 422, description = "`recipient_not_allowed` (not in the care team), `attachment_type_not_allowed`, `attachment_too_large`, `idempotency_key_reused`", body = super::Problem),
        (status = 501, description = "The EHR offers no patient messaging (`not_supported_by_ehr`)", body = super::Problem),
        (status = 502, description = "The EHR failed; `message_not_sent` when the thread was created but its message was not (retry with the same key)", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn start_thread(
    write: Idempotent,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (new, value) = json_body::<NewThread>(&headers, &body)?;
    write
        .run(
            "message-thread",
            &value,
            StatusCode::CREATED,
            async |ctx, idem| messages::start_thread(ctx, &new, idem).await,
        )
        .await
}

/// Replies in an open thread, to its participants, answering its latest message.
#[utoipa::path(
    post,
    path = "/messages/threads/{id}/replies",
    tag = "messages",
    request_body = NewReply,
    params(
        ("id" = String, Path, description = "The thread (header Communication) id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the write happen at most once"),
    ),
    responses(
        (status = 201, description = "The new message", body = MessageView),
        super::WriteErrors,
        super::BodyTooLarge,
        (status = 400, description = "Bad body: empty or too long text, attachment not base64", body = super::Problem),
        (status = 403, description = "The login may not write messages", body = super::Problem),
        (status = 404, description = "No such thread of the patient's", body = super::Problem),
        (status = 422, description = "`thread_closed`, `attachment_type_not_allowed`, `attachment_too_large`, `idempotency_key_reused`", body = super::Problem),
        (status = 501, description = "The EHR offers no patient messaging (`not_supported_by_ehr`)", body = super::Problem),
        (status = 502, description = "The EHR failed", body = super::Problem),
        (status = 503, description = "The EHR is unavailable, or the outcome is unknown (`outcome_unknown`); `idempotency_unavailable` or `state_unavailable`: the gateway's shared state cannot be reached, nothing was attempted", body = super::Problem),
    )
)]
async fn reply_in_thread(
    write: Idempotent,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ProblemResult<Response> {
    let (new, value) = json_body::<NewReply>(&headers, &body)?;
    // The same key and text in another thread is another request.
    // (serde also accepts a struct as a JSON array: never index into the body.)
    let value = serde_json::json!({"thread": &id, "body": value});
    write
        .run(
            "message-reply",
            &value,
            StatusCode::CREATED,
            async |ctx, idem| messages::reply(ctx, &id, &new, idem).await,
        )
        .await
}
