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
//! Where each concern lives: `views` holds the view and request types and the pure
//! readings of a Communication; `validate` checks what a patient sends (topic, text,
//! attachments, recipient; pure); `names` finds the participants' names; `threads`
//! lists the threads and reads one; `send` starts a thread and replies. Unit tests are
//! in `tests`.
//!
//! Strategy `unsupported` (Cerner: Communication is a clinician inbox, not readable or
//! writable with patient context) answers every route, reads included, with
//! `not_supported_by_ehr`.

mod names;
mod send;
#[cfg(test)]
mod tests;
mod threads;
mod validate;
mod views;

use crate::context::Ctx;
use crate::error::{PortalError, PortalResult};
use crate::profile::MessageStrategy;

pub use send::{header_body, message_body, reply, start_thread};
pub use threads::{COMBINED_BOUND, MAX_MESSAGES, MAX_THREADS, OR_CHUNK, list_threads, read_thread};
pub use validate::{
    Content, MAX_ATTACHMENTS, MAX_TOPIC_CHARS, check_content, check_topic, parse_recipient,
    recipient_allowed,
};
pub use views::{
    AttachmentInfo, MessageView, NewAttachment, NewReply, NewThread, Participant, SNIPPET_CHARS,
    ThreadList, ThreadStatus, ThreadSummary, ThreadView,
};

fn ensure_supported(ctx: &Ctx<'_>) -> PortalResult<()> {
    match ctx.profile().messages.strategy {
        MessageStrategy::Communication => Ok(()),
        MessageStrategy::Unsupported => Err(PortalError::not_supported(
            "this EHR offers no patient messaging over FHIR",
        )),
    }
}
