//! Appointments: list, slot search, book, cancel, reschedule, mapped to FHIR R4
//! `Appointment`, `Slot` and `Schedule` (and, for EHRs that schedule that way, the
//! `Appointment/$find` and `$book` operations).
//!
//! Where each concern lives: `views` holds the view and request types and the FHIR →
//! view mapping (pure); `read` lists the patient's appointments and reads one; `slots`
//! searches free slots (a `Slot` search, or `Appointment/$find` with the `operations`
//! strategy); `book` books per the profile's strategy (a Slot, a request, or an offered
//! appointment through `operations`' `$book`); `cancel` cancels; `reschedule` moves an
//! appointment by booking then cancelling, or with one patch of its slot (`patch_slot`,
//! Cerner). This module holds what they share: the bound on a patient's texts and the
//! two refusals. Unit tests are in `tests`.
//!
//! Appointments are read by search (`Appointment?_id=`) rather than by read: the
//! compartment narrowing makes another patient's id simply match nothing (404), and the
//! version comes with it (`meta.versionId`).

mod book;
mod cancel;
mod operations;
mod patch_slot;
mod read;
mod reschedule;
mod slots;
#[cfg(test)]
mod tests;
mod views;

use crate::error::{PortalError, PortalResult};
use crate::input::Text;

pub use book::{book, booking_body};
pub use cancel::{CANCELLATION_SYSTEM, CANCELLED_BY_URL, cancel, cancellation, cancelled_by};
pub use operations::{book_parameters, says_unavailable};
pub use patch_slot::{
    IS_RESCHEDULABLE_URL, RESCHEDULE_REASON_URL, reschedule_patch, reschedule_rule,
};
pub use read::{MAX_LISTED, get, list, load};
pub use reschedule::reschedule;
pub use slots::{
    DEFAULT_WINDOW_DAYS, Finding, MAX_SLOTS, find_parameters, search_slots, slot_window,
};
pub use views::{
    AppointmentList, AppointmentView, CancelRequest, ListQuery, NewAppointment, RescheduleRequest,
    Rescheduled, SlotList, SlotQuery, SlotView, When, appointment_view, is_cancelable,
};

/// The longest reason or comment a patient may give, in characters.
pub const MAX_TEXT_CHARS: usize = 500;

/// A reason or comment ([`crate::input::Text`]: at most [`MAX_TEXT_CHARS`], blank is
/// `None`).
fn check_text(name: &'static str, text: Option<&str>) -> PortalResult<Option<String>> {
    Text::new(name, MAX_TEXT_CHARS).optional(text)
}

fn slot_unavailable() -> PortalError {
    PortalError::conflict(
        "slot_unavailable",
        "this slot is no longer available; choose another",
    )
}

fn not_cancelable() -> PortalError {
    PortalError::refused(
        "not_cancelable",
        "this appointment can no longer be cancelled or rescheduled",
    )
}
