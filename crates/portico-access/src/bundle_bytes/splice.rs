//! [`Spliced`]: a verified Bundle's answer held as pieces of the upstream body it came
//! from, for a cache entry to keep instead of a copy of the answer.
//!
//! An answer a gateway renders from a verified Bundle is [`VerifiedBytes::to_json`] with
//! one base URL replaced by another everywhere (the EHR's by the gateway's). Nearly all
//! of it is the upstream body's own text: each kept entry is a span of it. So the
//! answer is kept as a list of pieces — ranges of the body and a few literal bytes (the
//! head, the replacement base, entries written from a tree) — and put together again,
//! on a later hit, from the same body, which the cache entry holds anyway. That costs a
//! copy instead of a decompression, and a small fraction of the answer's size.
//!
//! The pieces give exactly the bytes of replacing `from` by `to` in the whole text
//! (leftmost first, without overlaps, as `str::replace` does), because no occurrence of
//! `from` can cross from one piece into the next: pieces meet only at `{`, `}`, `[`,
//! `]` and `,`, and a `from` containing none of those cannot hold such a boundary.
//! Given a `from` that does contain one, [`VerifiedBytes::splice`] declines.

use memchr::memmem::Finder;

use super::{KeptEntry, VerifiedBytes};

/// An answer as pieces of the body it was verified from; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spliced {
    /// The replacement base (first, `to_len` bytes), then the other literal bytes.
    literals: Box<[u8]>,
    pieces: Box<[Piece]>,
    to_len: u32,
    /// The answer's length.
    len: usize,
    /// The length of the body it was spliced from.
    body_len: usize,
}

/// A range of the body or of the literals, and whether the replacement base follows
/// it: 8 bytes, offsets below 2 GiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    /// The start; the top bit set for a range of the literals.
    start: u32,
    /// The end; the top bit set when the replacement base follows.
    end: u32,
}

const LITERAL: u32 = 1 << 31;
const THEN_TO: u32 = 1 << 31;
/// Offsets must stay below the flag bits.
const MAX_OFFSET: usize = (1 << 31) - 1;

impl Piece {
    fn range(self) -> std::ops::Range<usize> {
        (self.start & !LITERAL) as usize..(self.end & !THEN_TO) as usize
    }
}

impl Spliced {
    /// The answer, put together from `body`: the same body it was spliced from (the
    /// cache entry that keeps it holds that body); `None` if `body` is not as long as
    /// that one.
    pub fn assemble(&self, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() != self.body_len {
            return None;
        }
        let to = &self.literals[..self.to_len as usize];
        let mut out = Vec::with_capacity(self.len);
        for piece in self.pieces.iter() {
            let source = if piece.start & LITERAL == 0 {
                body
            } else {
                &self.literals[..]
            };
            out.extend_from_slice(source.get(piece.range())?);
            if piece.end & THEN_TO != 0 {
                out.extend_from_slice(to);
            }
        }
        Some(out)
    }

    /// What keeping it costs, in bytes (its own, without the body it points into).
    pub fn weight(&self) -> usize {
        std::mem::size_of::<Spliced>()
            + self.literals.len()
            + self.pieces.len() * std::mem::size_of::<Piece>()
    }

    /// The answer's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the answer is empty (never, for a Bundle).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl VerifiedBytes {
    /// The answer [`VerifiedBytes::to_json`] writes, with every `from` replaced by
    /// `to`, as pieces of the upstream body (see the module docs). `None` when it cannot
    /// be: a Bundle handled as a tree, a body or answer past 2 GiB, or a `from` that is
    /// empty or holds one of `{}[],`.
    pub fn splice(&self, from: &str, to: &str) -> Option<Spliced> {
        let entries = self.entries.as_ref()?;
        if from.is_empty()
            || from
                .bytes()
                .any(|b| matches!(b, b'{' | b'}' | b'[' | b']' | b','))
            || self.body.len() > MAX_OFFSET
            || to.len() > MAX_OFFSET
        {
            return None;
        }
        let finder = Finder::new(from.as_bytes());
        let mut out = Builder::new(&self.body, to.as_bytes());
        // The head's members mostly came as they are (`id`, `meta`, `type`): those are
        // found in the body before its first entry.
        let before_entries = match entries.first() {
            Some(KeptEntry::Span(range)) => range.start,
            _ => self.body.len(),
        };
        match &self.head {
            serde_json::Value::Object(members) => {
                out.literal(b"{");
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.literal(b",");
                    }
                    // Serializing a string or a `Value` cannot fail.
                    let mut text = serde_json::to_vec(key).unwrap_or_default();
                    text.push(b':');
                    text.extend(serde_json::to_vec(value).unwrap_or_default());
                    out.member(&finder, &text, before_entries);
                }
                if !members.is_empty() {
                    out.literal(b",");
                }
                out.replaced(&finder, b"\"entry\":[");
            }
            _ => out.replaced(&finder, &self.head_and_entry_start()),
        }
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.literal(b",");
            }
            match entry {
                KeptEntry::Span(range) => out.body(&finder, range.start, range.end),
                KeptEntry::Written(text) => out.replaced(&finder, text.as_bytes()),
            }
        }
        out.literal(b"]}");
        out.finish()
    }
}

/// Collects pieces, merging what it can.
struct Builder<'a> {
    body: &'a [u8],
    literals: Vec<u8>,
    pieces: Vec<Piece>,
    to_len: usize,
    len: usize,
    /// Set when a literal would not fit below [`MAX_OFFSET`].
    overflowed: bool,
}

impl<'a> Builder<'a> {
    fn new(body: &'a [u8], to: &[u8]) -> Builder<'a> {
        Builder {
            body,
            literals: to.to_vec(),
            pieces: Vec::new(),
            to_len: to.len(),
            len: 0,
            overflowed: false,
        }
    }

    /// The last piece, if the replacement base does not follow it yet.
    fn open_last(&mut self) -> Option<&mut Piece> {
        self.pieces.last_mut().filter(|p| p.end & THEN_TO == 0)
    }

    /// `text` as it is. A literal the body holds right where the last body piece ends
    /// (the comma between two entries kept side by side) extends that piece instead.
    fn literal(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        let body = self.body;
        if let Some(last) = self.open_last()
            && last.start & LITERAL == 0
            && body.get(last.end as usize..last.end as usize + text.len()) == Some(text)
        {
            last.end += text.len() as u32;
            self.len += text.len();
            return;
        }
        let start = self.literals.len();
        if start + text.len() > MAX_OFFSET {
            // Past the offsets a piece can hold: `finish` declines.
            self.overflowed = true;
            return;
        }
        self.literals.extend_from_slice(text);
        self.push(start as u32 | LITERAL, self.literals.len() as u32);
    }

    /// A member of the head: a range of the body when the body has its text before
    /// `before` (and it holds no `from`), else `text` with `from` replaced.
    fn member(&mut self, finder: &Finder<'_>, text: &[u8], before: usize) {
        if finder.find(text).is_none()
            && let Some(at) = memchr::memmem::find(&self.body[..before], text)
        {
            self.body_range(at, at + text.len());
        } else {
            self.replaced(finder, text);
        }
    }

    /// `text` with every `from` replaced by `to`.
    fn replaced(&mut self, finder: &Finder<'_>, text: &[u8]) {
        let mut at = 0;
        for found in finder.find_iter(text) {
            self.literal(&text[at..found]);
            self.replacement();
            at = found + finder.needle().len();
        }
        self.literal(&text[at..]);
    }

    /// `body[start..end]` with every `from` replaced by `to`.
    fn body(&mut self, finder: &Finder<'_>, start: usize, end: usize) {
        let mut at = start;
        for found in finder.find_iter(&self.body[start..end]) {
            self.body_range(at, start + found);
            self.replacement();
            at = start + found + finder.needle().len();
        }
        self.body_range(at, end);
    }

    fn body_range(&mut self, start: usize, end: usize) {
        if start == end {
            return;
        }
        // The body's length is at most MAX_OFFSET (checked by `splice`).
        let (s, e) = (start as u32, end as u32);
        if let Some(last) = self.open_last()
            && last.start & LITERAL == 0
            && last.end == s
        {
            last.end = e;
            self.len += end - start;
            return;
        }
        self.push(s, e);
    }

    /// The replacement base: a flag on the last piece, or a piece of its own.
    fn replacement(&mut self) {
        self.len += self.to_len;
        match self.open_last() {
            Some(last) => last.end |= THEN_TO,
            None => self.pieces.push(Piece {
                start: LITERAL,
                end: THEN_TO,
            }),
        }
    }

    fn push(&mut self, start: u32, end: u32) {
        self.pieces.push(Piece { start, end });
        self.len += (end - (start & !LITERAL)) as usize;
    }

    fn finish(self) -> Option<Spliced> {
        (!self.overflowed).then(|| Spliced {
            literals: self.literals.into_boxed_slice(),
            pieces: self.pieces.into_boxed_slice(),
            to_len: self.to_len as u32,
            len: self.len,
            body_len: self.body.len(),
        })
    }
}
