//! Writing: starting a thread and replying.
//!
//! Starting a thread checks the topic, the content and the recipient (a member of the
//! patient's care team, the team, or the pool: `validate`), then creates the header
//! (`idem.step("header")`) and then the first message (`idem.step("message")`): when the
//! message fails after the header was created the answer is [`PortalError::Partial`]
//! `message_not_sent` naming the thread, and a retry with the same key finds the same
//! header (`If-None-Exist`) and sends the message once. A reply answers the thread's
//! last message, under a per-thread lock.

use chrono::{DateTime, Utc};
use portico_fhir::reference::Reference;
use serde_json::{Value, json};

use super::ensure_supported;
use super::names::Names;
use super::threads::{message_view, read_header, thread_messages, thread_view};
use super::validate::{Content, check_content, check_topic, parse_recipient, recipient_allowed};
use super::views::{MessageView, NewReply, NewThread, ThreadStatus, ThreadView, is_patient_ref};
use crate::careteam;
use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::idempotency::Idem;
use crate::view::{array, reference_of, str_at};

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
    let _guard = ctx.portal.lock(&format!("thread:{thread_id}")).await?;
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
