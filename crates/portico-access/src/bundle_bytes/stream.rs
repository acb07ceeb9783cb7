//! [`BundleStream`]: the entry-by-entry check of [`Policy::verify_bundle_bytes`] made
//! while the Bundle's text arrives, so that an answer can be written out before the EHR
//! has sent all of it, holding one entry at a time instead of the whole Bundle.
//!
//! The stream frames the text as it comes: the Bundle's members before `entry` are
//! held and parsed (they are small); then each entry, once its last byte has come, is
//! checked by the same code as the buffered verifier (the same projection of the members
//! the check reads, the same decision) and, when kept, handed out as it came. An entry
//! that fails the check is never handed out: nothing of an entry leaves before all of it
//! was checked. The members after the entries are held until the end, with `total`,
//! which moves after the entries: it can only be corrected once every entry is decided
//! (JSON gives members no order).
//!
//! A text that cannot be streamed this way is kept whole and verified at the end by
//! [`Policy::verify_bundle_bytes`], exactly as before: not an object, `entry` before
//! `resourceType` or `type` (which decides how each entry is checked), `entry` not an
//! array, not a Bundle. So the stream agrees with the tree
//! verifier wherever the buffered verifier does, with one exception on texts no EHR
//! sends: a member given before the entries and again after them (a tree keeps the
//! last, but the first was already written), and `resourceType`, `type` or `entry`
//! after the entries, which would change the decisions already made. Such a text is an
//! error after part of the answer has left, and the caller must end the answer as
//! broken (a client sees a cut answer, never a wrong whole one).
//!
//! Framing reads only brackets, quotes and backslashes; every framed value is then
//! checked by [`Scanner`] (entries) or `serde_json` (members), and the text between them
//! by the framing itself, so the whole text is checked to be JSON as the buffered
//! verifier checks it.

use bytes::{Bytes, BytesMut};
use portico_fhir::scan::{ScanError, Scanner};
use serde_json::{Map, Value};

use super::{EntryCheck, Kept, VerifiedBytes, scan_entry};
use crate::Principal;
use crate::policy::{Policy, VerifyReport, correct_total};

/// What a [`BundleStream`] hands out as the text arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// The Bundle's members before its entries, `total` held back. Given once, before
    /// any entry; the entries that follow belong in an array `entry`.
    Head(Map<String, Value>),
    /// A kept entry's text.
    Entry(Bytes),
}

/// How a [`BundleStream`] ended.
#[derive(Debug)]
pub enum Finished {
    /// The entries were streamed: the members that came after them, and `total` as
    /// corrected, to close the Bundle with.
    Tail {
        members: Map<String, Value>,
        report: VerifyReport,
    },
    /// Nothing was streamed: the whole answer, verified at the end.
    Whole(VerifiedBytes),
}

impl Finished {
    pub fn report(&self) -> VerifyReport {
        match self {
            Finished::Tail { report, .. } => *report,
            Finished::Whole(verified) => verified.report,
        }
    }
}

/// Why a streamed Bundle cannot be answered. When [`BundleStream::started`], part of
/// the answer has been handed out and the caller must cut it off.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("the answer is not JSON: {0}")]
    Syntax(String),
    #[error("the answer is not JSON: it ended early")]
    Incomplete,
    #[error("the Bundle gives `{0}` after its entries, which were already checked without it")]
    AfterEntries(String),
}

impl From<serde_json::Error> for StreamError {
    fn from(e: serde_json::Error) -> StreamError {
        StreamError::Syntax(e.to_string())
    }
}

/// A Bundle's check made as its text arrives; see the module docs.
///
/// Feed it with [`BundleStream::push`] and end it with [`BundleStream::finish`], each
/// time with the same policy and principal.
#[derive(Debug, Default)]
pub struct BundleStream {
    /// The text not handed out yet. Until the entries stream, everything from the
    /// start (a text that is not streamed is verified whole from it).
    buf: BytesMut,
    /// Bytes already dropped from the front of `buf`.
    dropped: usize,
    /// Where the next step reads in `buf`.
    pos: usize,
    step: Step,
    head: Map<String, Value>,
    tail: Map<String, Value>,
    /// The Bundle's `total`, the last one given.
    total: Option<Value>,
    /// Set when the entries started streaming.
    check: Option<EntryCheck>,
}

#[derive(Debug, Default)]
enum Step {
    #[default]
    Start,
    /// After the Bundle's `{`: a key or `}`.
    Open,
    /// After `,` between members: a key.
    Key,
    /// Reading a key.
    KeyText(Frame),
    /// After a key: its colon.
    Colon(String),
    /// After the colon: the value's first byte.
    Value(String),
    /// Reading a member's value.
    Member(String, Frame),
    /// After a member: `,` or `}`.
    AfterMember,
    /// After the entries' `[`: an entry or `]`.
    EntriesOpen,
    /// After `,` between entries: an entry.
    NextEntry,
    /// Reading an entry.
    Entry(Frame),
    /// After an entry: `,` or `]`.
    AfterEntry,
    /// After the Bundle's `}`: only whitespace.
    End,
    /// Not streamed: the text is kept whole and verified at the end.
    Whole,
}

impl BundleStream {
    pub fn new() -> BundleStream {
        BundleStream::default()
    }

    /// Whether anything was handed out: an error now must cut the answer off.
    pub fn started(&self) -> bool {
        self.check.is_some()
    }

    /// The entries decided so far, once the entries started streaming.
    pub fn report(&self) -> Option<VerifyReport> {
        self.check.as_ref().map(|check| check.report)
    }

    /// Takes the next piece of the text; what can be handed out now is added to `out`.
    pub fn push(
        &mut self,
        policy: &Policy,
        principal: &Principal,
        chunk: &[u8],
        out: &mut Vec<Piece>,
    ) -> Result<(), StreamError> {
        self.buf.extend_from_slice(chunk);
        if matches!(self.step, Step::Whole) {
            return Ok(());
        }
        self.run(policy, principal, out)
    }

    /// Ends the text: how the Bundle closes, or, when nothing was streamed, the whole
    /// answer verified.
    pub fn finish(
        mut self,
        policy: &Policy,
        principal: &Principal,
    ) -> Result<Finished, StreamError> {
        let Some(check) = self.check.take() else {
            let body = self.buf.freeze();
            return Ok(Finished::Whole(
                policy.verify_bundle_bytes(principal, body)?,
            ));
        };
        if !matches!(self.step, Step::End) {
            return Err(StreamError::Incomplete);
        }
        let mut bundle = self.head;
        for (key, value) in &self.tail {
            bundle.insert(key.clone(), value.clone());
        }
        if let Some(total) = self.total {
            bundle.insert("total".to_owned(), total);
        }
        let mut bundle = Value::Object(bundle);
        let grants = policy.grants(principal);
        correct_total(&mut bundle, &grants, check.report, |_| check.matches);
        let mut members = self.tail;
        if let Some(total) = bundle.get("total") {
            members.insert("total".to_owned(), total.clone());
        }
        Ok(Finished::Tail {
            members,
            report: check.report,
        })
    }

    fn run(
        &mut self,
        policy: &Policy,
        principal: &Principal,
        out: &mut Vec<Piece>,
    ) -> Result<(), StreamError> {
        // Computed once a piece: cheap, and it borrows the principal, which the stream
        // does not hold.
        let grants = policy.grants(principal);
        // A step that needs more text than there is stays the step, for the next piece.
        // Once the entries stream, nothing before `pos` is read again (a frame being read
        // keeps its start): it goes, so that whitespace cannot pile up either.
        macro_rules! wait {
            ($step:expr) => {{
                let step = $step;
                if self.started()
                    && !matches!(step, Step::KeyText(_) | Step::Member(..) | Step::Entry(_))
                {
                    self.drop_before(self.pos);
                }
                self.step = step;
                return Ok(());
            }};
        }
        loop {
            let step = std::mem::take(&mut self.step);
            let next = match step {
                Step::Start => match self.next_byte() {
                    None => wait!(Step::Start),
                    Some(b'{') => {
                        self.pos += 1;
                        Step::Open
                    }
                    // Not an object: the buffered verifier (and its tree) decides.
                    Some(_) => Step::Whole,
                },
                Step::Open | Step::Key => match self.next_byte() {
                    None => wait!(step),
                    Some(b'}') if matches!(step, Step::Open) => {
                        self.pos += 1;
                        Step::End
                    }
                    Some(b'"') => Step::KeyText(Frame::new(&self.buf, self.pos)),
                    Some(_) => return Err(self.error("expected a key")),
                },
                Step::KeyText(mut frame) => match frame.end(&self.buf) {
                    None => wait!(Step::KeyText(frame)),
                    Some(end) => {
                        let key = serde_json::from_slice::<String>(&self.buf[frame.start..end])?;
                        self.pos = end;
                        Step::Colon(key)
                    }
                },
                Step::Colon(key) => match self.next_byte() {
                    None => wait!(Step::Colon(key)),
                    Some(b':') => {
                        self.pos += 1;
                        Step::Value(key)
                    }
                    Some(_) => return Err(self.error("expected a colon")),
                },
                Step::Value(key) => match self.next_byte() {
                    None => wait!(Step::Value(key)),
                    Some(first) if key == "entry" => {
                        if self.started() {
                            return Err(StreamError::AfterEntries(key));
                        }
                        // What decides each entry (`type`: a search's matches are
                        // checked as searches, the rest as reads) must have come first.
                        let bundle = self.head.get("resourceType").and_then(Value::as_str)
                            == Some("Bundle")
                            && self.head.contains_key("type");
                        if first == b'[' && bundle {
                            self.start(policy, principal, out);
                            Step::EntriesOpen
                        } else {
                            Step::Whole
                        }
                    }
                    Some(_) => {
                        if self.started()
                            && (self.head.contains_key(&key)
                                || key == "resourceType"
                                || key == "type")
                        {
                            return Err(StreamError::AfterEntries(key));
                        }
                        Step::Member(key, Frame::new(&self.buf, self.pos))
                    }
                },
                Step::Member(key, mut frame) => match frame.end(&self.buf) {
                    None => wait!(Step::Member(key, frame)),
                    Some(end) => {
                        let value = member_value(&self.buf[frame.start..end])
                            .map_err(|e| self.error_at(frame.start + e.at, e.what))?;
                        self.pos = end;
                        if key == "total" {
                            self.total = Some(value);
                        } else if self.started() {
                            self.tail.insert(key, value);
                        } else {
                            self.head.insert(key, value);
                        }
                        Step::AfterMember
                    }
                },
                Step::AfterMember => match self.next_byte() {
                    None => wait!(Step::AfterMember),
                    Some(b',') => {
                        self.pos += 1;
                        Step::Key
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        Step::End
                    }
                    Some(_) => return Err(self.error("expected a comma or the Bundle's end")),
                },
                Step::EntriesOpen | Step::NextEntry => match self.next_byte() {
                    None => wait!(step),
                    Some(b']') if matches!(step, Step::EntriesOpen) => {
                        self.pos += 1;
                        Step::AfterMember
                    }
                    Some(_) => Step::Entry(Frame::new(&self.buf, self.pos)),
                },
                Step::Entry(mut frame) => match frame.end(&self.buf) {
                    None => wait!(Step::Entry(frame)),
                    Some(end) => {
                        self.entry(policy, &grants, frame.start, end, out)?;
                        Step::AfterEntry
                    }
                },
                Step::AfterEntry => match self.next_byte() {
                    None => wait!(Step::AfterEntry),
                    Some(b',') => {
                        self.pos += 1;
                        Step::NextEntry
                    }
                    Some(b']') => {
                        self.pos += 1;
                        Step::AfterMember
                    }
                    Some(_) => return Err(self.error("expected a comma or the entries' end")),
                },
                Step::End => match self.next_byte() {
                    None => wait!(Step::End),
                    Some(_) => return Err(self.error("trailing characters")),
                },
                Step::Whole => wait!(Step::Whole),
            };
            self.step = next;
        }
    }

    /// The first entry: the head is handed out and the text before the entries dropped.
    fn start(&mut self, policy: &Policy, principal: &Principal, out: &mut Vec<Piece>) {
        let searchset = self.head.get("type").and_then(Value::as_str) == Some("searchset");
        self.check = Some(policy.entry_check(principal, searchset));
        out.push(Piece::Head(self.head.clone()));
        // Past the `[`.
        self.pos += 1;
        self.drop_before(self.pos);
    }

    /// Checks the entry at `start..end` of `buf` and hands it out when kept.
    fn entry(
        &mut self,
        policy: &Policy,
        grants: &Result<crate::policy::Grants<'_>, crate::Denial>,
        start: usize,
        end: usize,
        out: &mut Vec<Piece>,
    ) -> Result<(), StreamError> {
        let text = self.buf.split_to(end).freeze().slice(start..);
        self.dropped += end;
        self.pos = 0;
        let Some(check) = self.check.as_mut() else {
            return Err(StreamError::Incomplete);
        };
        let at = self.dropped - text.len();
        // The Bundle's object and its `entry` array hold the entry.
        let mut s = Scanner::nested(&text, 2).map_err(|e| scan_error(at, e))?;
        let raw = scan_entry(&mut s).map_err(|e| scan_error(at, e))?;
        s.end().map_err(|e| scan_error(at, e))?;
        match policy.check_entry(grants, check, &raw)? {
            None => {}
            Some(Kept::AsItCame(kept)) => out.push(Piece::Entry(text.slice_ref(kept.as_bytes()))),
            Some(Kept::Written(written)) => out.push(Piece::Entry(Bytes::from(written))),
        }
        Ok(())
    }

    fn drop_before(&mut self, at: usize) {
        let _ = self.buf.split_to(at);
        self.dropped += at;
        self.pos -= at;
    }

    /// The next byte that is not whitespace, without taking it.
    fn next_byte(&mut self) -> Option<u8> {
        while let Some(&b) = self.buf.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn error(&self, what: &str) -> StreamError {
        self.error_at(self.pos, what)
    }

    fn error_at(&self, at: usize, what: &str) -> StreamError {
        StreamError::Syntax(format!("{what} at byte {}", self.dropped + at))
    }
}

/// Writes a streamed Bundle's text from its pieces: [`Writer::head`] for the
/// [`Piece::Head`], each [`Piece::Entry`] after [`Writer::before_entry`], then
/// [`Writer::tail`] for the [`Finished::Tail`].
#[derive(Debug)]
pub struct Writer {
    first: bool,
}

impl Default for Writer {
    fn default() -> Writer {
        Writer { first: true }
    }
}

impl Writer {
    /// The Bundle's opening: its head's members, then `"entry":[`.
    pub fn head(head: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(b'{');
        for (key, value) in head {
            write_member(&mut out, key, value);
            out.push(b',');
        }
        out.extend_from_slice(b"\"entry\":[");
        out
    }

    /// What goes before the next entry: a comma, except before the first.
    pub fn before_entry(&mut self) -> &'static [u8] {
        if std::mem::take(&mut self.first) {
            b""
        } else {
            b","
        }
    }

    /// The Bundle's closing: the end of its entries, then the members after them.
    pub fn tail(members: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(b']');
        for (key, value) in members {
            out.push(b',');
            write_member(&mut out, key, value);
        }
        out.push(b'}');
        out
    }
}

/// `"key":value`.
fn write_member(out: &mut Vec<u8>, key: &str, value: &Value) {
    // Writing a string or a `Value` to a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    let _ = serde_json::to_writer(&mut *out, value);
}

fn scan_error(at: usize, e: ScanError) -> StreamError {
    StreamError::Syntax(format!("{} at byte {}", e.what, at + e.at))
}

/// A member of the Bundle (inside its object) as a tree, checked like the scanner
/// checks the whole text.
fn member_value(text: &[u8]) -> Result<Value, ScanError> {
    let mut s = Scanner::nested(text, 1)?;
    s.skip_value()?;
    s.end()?;
    serde_json::from_slice(text).map_err(|_| ScanError {
        what: "a value serde_json refuses",
        at: 0,
    })
}

/// Where a value's text ends, found as its bytes arrive: brackets are counted outside
/// strings, and a string ends at a quote that no backslash escapes. Says nothing of
/// whether the text is JSON (its reader checks that); on JSON it ends where JSON does.
#[derive(Debug)]
struct Frame {
    start: usize,
    /// How far it has read.
    at: usize,
    kind: Kind,
    depth: usize,
    in_string: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Container,
    String,
    /// A number or a literal: it ends at the next delimiter.
    Scalar,
}

impl Frame {
    /// A value whose first byte is at `start` of `buf`.
    fn new(buf: &[u8], start: usize) -> Frame {
        let kind = match buf[start] {
            b'{' | b'[' => Kind::Container,
            b'"' => Kind::String,
            _ => Kind::Scalar,
        };
        Frame {
            start,
            at: start + 1,
            kind,
            depth: 1,
            in_string: kind == Kind::String,
        }
    }

    /// The end of the value (past its last byte) once `buf` holds all of it.
    fn end(&mut self, buf: &[u8]) -> Option<usize> {
        if self.kind == Kind::Scalar {
            let rest = &buf[self.at..];
            return match rest
                .iter()
                .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b',' | b']' | b'}'))
            {
                Some(i) => Some(self.at + i),
                None => {
                    self.at = buf.len();
                    None
                }
            };
        }
        loop {
            if self.in_string {
                let Some(i) = memchr::memchr2(b'"', b'\\', &buf[self.at..]) else {
                    self.at = buf.len();
                    return None;
                };
                let at = self.at + i;
                if buf[at] == b'\\' {
                    if at + 1 >= buf.len() {
                        // The escaped byte has not come yet.
                        self.at = at;
                        return None;
                    }
                    self.at = at + 2;
                    continue;
                }
                self.at = at + 1;
                self.in_string = false;
                if self.kind == Kind::String {
                    return Some(self.at);
                }
                continue;
            }
            let rest = &buf[self.at..];
            let Some(i) = rest
                .iter()
                .position(|b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']'))
            else {
                self.at = buf.len();
                return None;
            };
            let at = self.at + i;
            self.at = at + 1;
            match buf[at] {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                _ => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        return Some(self.at);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
