//! What a patient sends, checked (pure): the topic, the text and attachments against
//! the EHR profile, and the recipient. A patient may write to a participant member of
//! one of their active CareTeams, to such a CareTeam itself, or to a reference in the
//! profile's `messages.recipient_pool`; anything else is `recipient_not_allowed`.

use base64::Engine as _;
use chrono::{DateTime, Utc};
use portico_fhir::reference::Reference;
use serde_json::{Value, json};

use super::views::NewAttachment;
use crate::careteam;
use crate::error::{PortalError, PortalResult};
use crate::input::Text;
use crate::profile::MessagesProfile;

/// The longest topic, in characters.
pub const MAX_TOPIC_CHARS: usize = 200;

/// The most attachments on one message.
pub const MAX_ATTACHMENTS: usize = 5;

/// Types a patient may address a message to.
const RECIPIENT_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "CareTeam",
    "Organization",
    "Group",
];

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
