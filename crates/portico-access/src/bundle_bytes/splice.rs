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
    /// The bytes the literal pieces point into.
    literals: Box<[u8]>,
    pieces: Box<[Piece]>,
    /// The answer's length.
    len: usize,
    /// The length of the body it was spliced from.
    body_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// `literals[start..end]`.
    Literal(u32, u32),
    /// `body[start..end]`.
    Body(u32, u32),
}

impl Spliced {
    /// The answer, put together from `body`: the same body it was spliced from (the
    /// cache entry that keeps it holds that body); `None` if `body` is not as long as
    /// that one.
    pub fn assemble(&self, body: &[u8]) -> Option<Vec<u8>> {
        if body.len() != self.body_len {
            return None;
        }
        let mut out = Vec::with_capacity(self.len);
        for piece in self.pieces.iter() {
            let text = match *piece {
                Piece::Literal(start, end) => self.literals.get(start as usize..end as usize)?,
                Piece::Body(start, end) => body.get(start as usize..end as usize)?,
            };
            out.extend_from_slice(text);
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
    /// be: a Bundle handled as a tree, a body past 4 GiB, or a `from` that is empty or
    /// holds one of `{}[],`.
    pub fn splice(&self, from: &str, to: &str) -> Option<Spliced> {
        let entries = self.entries.as_ref()?;
        if from.is_empty()
            || from
                .bytes()
                .any(|b| matches!(b, b'{' | b'}' | b'[' | b']' | b','))
            || u32::try_from(self.body.len()).is_err()
        {
            return None;
        }
        let finder = Finder::new(from.as_bytes());
        let mut out = Builder::new(&self.body, to.as_bytes())?;
        out.replaced(&finder, &self.head_and_entry_start());
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.literal(b",");
            }
            match entry {
                KeptEntry::Span(range) => out.body(&finder, range.start, range.end, from.len()),
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
    /// Where `to` is in `literals` (written once, pointed at by every replacement).
    to: Piece,
    len: usize,
    /// False once a literal would not fit in 4 GiB.
    fits: bool,
}

impl<'a> Builder<'a> {
    fn new(body: &'a [u8], to: &[u8]) -> Option<Builder<'a>> {
        let end = u32::try_from(to.len()).ok()?;
        Some(Builder {
            body,
            literals: to.to_vec(),
            pieces: Vec::new(),
            to: Piece::Literal(0, end),
            len: 0,
            fits: true,
        })
    }

    /// `text` as it is. A literal the body holds right where the last body piece ends
    /// (the comma between two entries kept side by side) extends that piece instead.
    fn literal(&mut self, text: &[u8]) {
        if let Some(Piece::Body(_, end)) = self.pieces.last_mut() {
            let at = *end as usize;
            if self.body.get(at..at + text.len()) == Some(text) {
                *end += text.len() as u32;
                self.len += text.len();
                return;
            }
        }
        let start = self.literals.len();
        self.literals.extend_from_slice(text);
        match (u32::try_from(start), u32::try_from(self.literals.len())) {
            (Ok(start), Ok(end)) => self.push(Piece::Literal(start, end), text.len()),
            _ => self.fits = false,
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
    fn body(&mut self, finder: &Finder<'_>, start: usize, end: usize, from_len: usize) {
        let mut at = start;
        for found in finder.find_iter(&self.body[start..end]) {
            self.body_range(at, start + found);
            self.replacement();
            at = start + found + from_len;
        }
        self.body_range(at, end);
    }

    fn body_range(&mut self, start: usize, end: usize) {
        if start == end {
            return;
        }
        // The body's length fits in u32 (checked by `splice`).
        let (s, e) = (start as u32, end as u32);
        if let Some(Piece::Body(_, last_end)) = self.pieces.last_mut()
            && *last_end == s
        {
            *last_end = e;
            self.len += end - start;
            return;
        }
        self.push(Piece::Body(s, e), end - start);
    }

    fn replacement(&mut self) {
        let Piece::Literal(start, end) = self.to else {
            return;
        };
        self.push(self.to, (end - start) as usize);
    }

    fn push(&mut self, piece: Piece, len: usize) {
        if len > 0 {
            self.pieces.push(piece);
            self.len += len;
        }
    }

    fn finish(self) -> Option<Spliced> {
        self.fits.then(|| Spliced {
            literals: self.literals.into_boxed_slice(),
            pieces: self.pieces.into_boxed_slice(),
            len: self.len,
            body_len: self.body.len(),
        })
    }
}
