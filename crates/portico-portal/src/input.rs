//! One validator for what a patient sends in a portal body, used by every area.
//!
//! Free text ([`Text`]): appointment reasons and comments, refill notes and pharmacies,
//! referral reasons and notes, message texts, topics and attachment titles. The rules
//! are the same everywhere:
//!
//! - text is trimmed; blank text is absent ([`Text::optional`]) or refused
//!   ([`Text::required`]);
//! - its length is counted in characters, not bytes, after trimming;
//! - control characters are refused. In multi-line text (the default) tabs, line feeds
//!   and carriage return + line feed pairs are ordinary text: `\r\n` is the line break
//!   HTML forms and Windows clients send. A carriage return on its own is refused like
//!   any other control character (it is no line break anywhere today, and it lets text
//!   overwrite itself in a log or terminal). One-line text ([`Text::one_line`]) allows
//!   no control character at all. Accepted text is kept as sent (line breaks are not
//!   rewritten).
//!
//! The messages name the body field, in one wording: `reason is longer than 500
//! characters`, `reason contains control characters other than tabs and line breaks`,
//! `topic must be one line of text`, `reason must not be empty`. The codes are
//! `text_too_long` for a text too long and `invalid_request` otherwise, unless a field
//! keeps codes of its own that clients already rely on (messages: `text_required`,
//! `topic_required`, `topic_too_long`, `invalid_topic`, `invalid_attachment`).
//!
//! Identifiers and tokens: [`check_id`] (a FHIR id), [`check_token`] (a search token
//! `code` or `system|code` safe to forward) and [`is_visible_ascii`] (an opaque token,
//! such as a payment processor's).

use crate::error::{PortalError, PortalResult};

/// The code of a text longer than its field allows.
pub const TEXT_TOO_LONG: &str = "text_too_long";
/// The code of any other invalid input.
pub const INVALID_REQUEST: &str = "invalid_request";

/// How one field of free text is checked. Build it with [`Text::new`] (multi-line, the
/// usual codes), then [`Text::one_line`] and the `*_code` methods where a field differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Text {
    field: &'static str,
    max_chars: usize,
    one_line: bool,
    blank_code: &'static str,
    too_long_code: &'static str,
    control_code: &'static str,
}

impl Text {
    /// Multi-line text of at most `max_chars` characters, named `field` in messages.
    pub const fn new(field: &'static str, max_chars: usize) -> Text {
        Text {
            field,
            max_chars,
            one_line: false,
            blank_code: INVALID_REQUEST,
            too_long_code: TEXT_TOO_LONG,
            control_code: INVALID_REQUEST,
        }
    }

    /// One line: no control character at all, tabs and line breaks included.
    pub const fn one_line(self) -> Text {
        Text {
            one_line: true,
            ..self
        }
    }

    /// The code of a required field left blank.
    pub const fn blank_code(self, code: &'static str) -> Text {
        Text {
            blank_code: code,
            ..self
        }
    }

    /// The code of a text too long.
    pub const fn too_long_code(self, code: &'static str) -> Text {
        Text {
            too_long_code: code,
            ..self
        }
    }

    /// The code of a text with a control character it may not hold.
    pub const fn control_code(self, code: &'static str) -> Text {
        Text {
            control_code: code,
            ..self
        }
    }

    /// An optional field: `None` when absent or blank, else the trimmed text, checked.
    pub fn optional(&self, text: Option<&str>) -> PortalResult<Option<String>> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        if text.chars().count() > self.max_chars {
            return Err(PortalError::Invalid {
                code: self.too_long_code,
                message: format!(
                    "{} is longer than {} characters",
                    self.field, self.max_chars
                ),
            });
        }
        if has_control(text, self.one_line) {
            return Err(PortalError::Invalid {
                code: self.control_code,
                message: if self.one_line {
                    format!("{} must be one line of text", self.field)
                } else {
                    format!(
                        "{} contains control characters other than tabs and line breaks",
                        self.field
                    )
                },
            });
        }
        Ok(Some(text.to_owned()))
    }

    /// A required field: the trimmed text, checked; blank text is refused.
    pub fn required(&self, text: &str) -> PortalResult<String> {
        self.optional(Some(text))?
            .ok_or_else(|| PortalError::Invalid {
                code: self.blank_code,
                message: format!("{} must not be empty", self.field),
            })
    }
}

/// Whether `text` holds a control character it may not: any in one-line text; in
/// multi-line text any but a tab, a line feed, or a carriage return right before a line
/// feed.
fn has_control(text: &str, one_line: bool) -> bool {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_control() {
            continue;
        }
        let allowed = !one_line
            && match c {
                '\t' | '\n' => true,
                '\r' => chars.peek() == Some(&'\n'),
                _ => false,
            };
        if !allowed {
            return true;
        }
    }
    false
}

/// Whether `value` is 1 to `max_len` visible ASCII characters (no space, no control).
pub fn is_visible_ascii(value: &str, max_len: usize) -> bool {
    !value.is_empty() && value.len() <= max_len && value.bytes().all(|b| b.is_ascii_graphic())
}

/// A search token (`code` or `system|code`) that is safe to forward.
pub fn check_token(name: &str, token: &str) -> PortalResult<String> {
    let ok = is_visible_ascii(token, 200) && token.split('|').count() <= 2 && !token.contains(',');
    if ok {
        Ok(token.to_owned())
    } else {
        Err(PortalError::invalid(format!("{name} is not a valid code")))
    }
}

/// A FHIR id ([`portico_fhir::reference::is_valid_id`]).
pub fn check_id(name: &str, id: &str) -> PortalResult<String> {
    if portico_fhir::reference::is_valid_id(id) {
        Ok(id.to_owned())
    } else {
        Err(PortalError::invalid(format!("{name} is not a valid id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTE: Text = Text::new("note", 5);
    const TOPIC: Text = Text::new("topic", 5)
        .one_line()
        .blank_code("topic_required")
        .too_long_code("topic_too_long")
        .control_code("invalid_topic");

    fn fails(result: PortalResult<Option<String>>) -> (&'static str, String) {
        let e = result.unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn text_is_trimmed_and_counted_in_characters() {
        assert_eq!(NOTE.optional(None).unwrap(), None);
        assert_eq!(NOTE.optional(Some(" \r\n\t ")).unwrap(), None);
        assert_eq!(
            NOTE.optional(Some("  hi \n")).unwrap().as_deref(),
            Some("hi")
        );
        assert_eq!(
            NOTE.optional(Some("ééééé")).unwrap().as_deref(),
            Some("ééééé")
        );
        assert_eq!(
            fails(NOTE.optional(Some("éééééé"))),
            (
                "text_too_long",
                "note is longer than 5 characters".to_owned()
            )
        );
    }

    #[test]
    fn line_breaks_and_tabs_are_text_a_lone_carriage_return_is_not() {
        for ok in ["a\nb", "a\r\nb", "a\tb", "a\r\n\nb"] {
            assert_eq!(
                NOTE.optional(Some(ok)).unwrap().as_deref(),
                Some(ok),
                "{ok:?}"
            );
        }
        for bad in [
            "a\rb", "a\r\rb", "a\u{0}b", "a\u{1b}b", "a\u{7f}b", "a\u{85}b",
        ] {
            assert_eq!(
                fails(NOTE.optional(Some(bad))),
                (
                    "invalid_request",
                    "note contains control characters other than tabs and line breaks".to_owned()
                ),
                "{bad:?}"
            );
        }
        // Trimming takes a trailing line break, carriage return included.
        assert_eq!(NOTE.optional(Some("ab\r")).unwrap().as_deref(), Some("ab"));
    }

    #[test]
    fn one_line_text_allows_no_control_character_and_fields_keep_their_codes() {
        assert_eq!(TOPIC.optional(Some("a b")).unwrap().as_deref(), Some("a b"));
        for bad in ["a\nb", "a\r\nb", "a\tb"] {
            assert_eq!(
                fails(TOPIC.optional(Some(bad))),
                ("invalid_topic", "topic must be one line of text".to_owned()),
                "{bad:?}"
            );
        }
        assert_eq!(fails(TOPIC.optional(Some("abcdef"))).0, "topic_too_long");
        let blank = TOPIC.required("  ").unwrap_err();
        assert_eq!(blank.code(), "topic_required");
        assert_eq!(blank.to_string(), "topic must not be empty");
        let blank = NOTE.required("").unwrap_err();
        assert_eq!(blank.code(), "invalid_request");
        assert_eq!(blank.to_string(), "note must not be empty");
        assert_eq!(NOTE.required(" x ").unwrap(), "x");
    }

    #[test]
    fn tokens_and_ids_are_visible_ascii() {
        assert!(is_visible_ascii("tok_1", 5));
        assert!(!is_visible_ascii("tok_12", 5));
        assert!(!is_visible_ascii("", 5));
        assert!(!is_visible_ascii("a b", 5));
        assert!(!is_visible_ascii("é", 5));
        assert!(check_id("slot_id", "s-1.2").is_ok());
        assert_eq!(
            check_id("slot_id", "s/1").unwrap_err().to_string(),
            "slot_id is not a valid id"
        );
    }
}
