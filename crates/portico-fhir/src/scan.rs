//! [`Scanner`]: a pull scanner over JSON text that checks its syntax and builds nothing.
//!
//! The gateway reads a few members of large answers (a Bundle's `type`, each entry's
//! `search` and the few resource members an access check looks at) and passes the rest
//! on as it came. A parser into a tree pays for every string and map it will throw away;
//! this scanner walks the text once, hands its caller the keys of the objects it chooses
//! to enter and the byte ranges of the values it skips, and checks along the way that
//! the text is JSON (RFC 8259): every string closed, escaped correctly and free of
//! control characters, every number well formed, every container closed, nothing after
//! the value but whitespace, and the whole text UTF-8. A value whose range it returned
//! can be parsed by `serde_json` on its own if the caller needs it as a tree.
//!
//! It accepts what `serde_json` accepts into a `Value`, with two exceptions on texts no
//! EHR should send, both of which `serde_json` also accepts when it skips a value rather
//! than building it: a `\u` escape of a lone UTF-16 surrogate, and a number too large for
//! an `f64`. Nesting deeper than `serde_json`'s limit (128 containers) is refused, as it
//! refuses it.

use std::borrow::Cow;
use std::ops::Range;

/// Containers nested deeper than this are refused (`serde_json`'s recursion limit).
const MAX_DEPTH: usize = 128;

/// Why a text is not JSON, and the byte where that was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what} at byte {at}")]
pub struct ScanError {
    pub what: &'static str,
    pub at: usize,
}

/// What failed inside the scanner, before [`Scanner::error`] adds where: one word, so
/// that the hot loops return a small `Result`.
struct Failed(&'static str);

/// A cursor over one JSON text; see the module docs.
///
/// The caller drives it: [`Scanner::enter_object`] then [`Scanner::next_key`] until it
/// answers `None`, after each key either entering the value or [`Scanner::skip_value`];
/// arrays likewise with [`Scanner::enter_array`] and [`Scanner::next_element`]; then
/// [`Scanner::end`] to check that nothing but whitespace follows.
#[derive(Debug)]
pub struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
    /// Just after `{` or `[`: the next member or element needs no comma before it.
    first: bool,
}

impl<'a> Scanner<'a> {
    /// A scanner at the start of `bytes`; an error when they are not UTF-8.
    pub fn new(bytes: &'a [u8]) -> Result<Scanner<'a>, ScanError> {
        let text = std::str::from_utf8(bytes).map_err(|e| ScanError {
            what: "not UTF-8",
            at: e.valid_up_to(),
        })?;
        Ok(Scanner {
            text,
            pos: 0,
            depth: 0,
            first: false,
        })
    }

    /// A scanner at the start of `bytes`, a value that a larger text holds inside
    /// `outer` containers: the depth limit counts them, as it would in the whole text.
    pub fn nested(bytes: &'a [u8], outer: usize) -> Result<Scanner<'a>, ScanError> {
        let mut scanner = Scanner::new(bytes)?;
        scanner.depth = outer;
        Ok(scanner)
    }

    /// The whole text.
    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Where the scanner is: the byte after the last thing it took.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// The next byte that is not whitespace, without taking it.
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes().get(self.pos).copied()
    }

    /// Takes the `{` of an object.
    pub fn enter_object(&mut self) -> Result<(), ScanError> {
        self.open(b'{', "expected an object")
    }

    /// Takes the `[` of an array.
    pub fn enter_array(&mut self) -> Result<(), ScanError> {
        self.open(b'[', "expected an array")
    }

    /// The next key of the object being read, with its colon taken (the scanner is then
    /// at the member's value); `None` when the object closed.
    pub fn next_key(&mut self) -> Result<Option<Cow<'a, str>>, ScanError> {
        if !self.next_item(b'}')? {
            return Ok(None);
        }
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        let key = self.string()?;
        if self.peek() != Some(b':') {
            return Err(self.error("expected a colon"));
        }
        self.pos += 1;
        Ok(Some(key))
    }

    /// Whether the array being read has another element (the scanner is then at it);
    /// `false` when the array closed.
    pub fn next_element(&mut self) -> Result<bool, ScanError> {
        self.next_item(b']')
    }

    /// Reads past the next value, checking it, and answers where its text lies.
    pub fn skip_value(&mut self) -> Result<Range<usize>, ScanError> {
        self.skip_whitespace();
        let start = self.pos;
        self.skip().map_err(|Failed(what)| self.error(what))?;
        Ok(start..self.pos)
    }

    /// [`Scanner::skip_value`] without recursion: `objects` holds, a bit per container
    /// entered, whether it is an object.
    fn skip(&mut self) -> Result<(), Failed> {
        let bytes = self.bytes();
        let mut objects: u128 = 0;
        let mut open = 0;
        loop {
            // At a value.
            self.skip_whitespace();
            match bytes.get(self.pos) {
                Some(&bracket @ (b'{' | b'[')) => {
                    if self.depth + open + 1 >= MAX_DEPTH {
                        return Err(Failed("nested too deeply"));
                    }
                    self.pos += 1;
                    self.skip_whitespace();
                    let close = if bracket == b'{' { b'}' } else { b']' };
                    if bytes.get(self.pos) == Some(&close) {
                        self.pos += 1;
                    } else {
                        objects = (objects << 1) | u128::from(bracket == b'{');
                        open += 1;
                        if bracket == b'{' {
                            self.skip_key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.pos += 1;
                    self.skip_string()?;
                }
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                _ => return Err(Failed("expected a value")),
            }
            // After a value: close what ends here, up to the next item.
            loop {
                if open == 0 {
                    return Ok(());
                }
                self.skip_whitespace();
                let in_object = objects & 1 == 1;
                match (bytes.get(self.pos), in_object) {
                    (Some(b','), _) => {
                        self.pos += 1;
                        if in_object {
                            self.skip_whitespace();
                            self.skip_key()?;
                        }
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        objects >>= 1;
                        open -= 1;
                    }
                    _ => return Err(Failed("expected a comma or the container's end")),
                }
            }
        }
    }

    /// Past a key and its colon (the scanner at the key, whitespace taken).
    fn skip_key(&mut self) -> Result<(), Failed> {
        if self.bytes().get(self.pos) != Some(&b'"') {
            return Err(Failed("expected a key"));
        }
        self.pos += 1;
        self.skip_string()?;
        self.skip_whitespace();
        if self.bytes().get(self.pos) != Some(&b':') {
            return Err(Failed("expected a colon"));
        }
        self.pos += 1;
        Ok(())
    }

    /// Checks that only whitespace is left.
    pub fn end(&mut self) -> Result<(), ScanError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn error(&self, what: &'static str) -> ScanError {
        ScanError { what, at: self.pos }
    }

    fn skip_whitespace(&mut self) {
        let bytes = self.bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn open(&mut self, bracket: u8, what: &'static str) -> Result<(), ScanError> {
        if self.peek() != Some(bracket) {
            return Err(self.error(what));
        }
        if self.depth + 1 >= MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        self.depth += 1;
        self.pos += 1;
        self.first = true;
        Ok(())
    }

    /// Past the comma before the next item of a container, or its closing bracket.
    fn next_item(&mut self, close: u8) -> Result<bool, ScanError> {
        let next = self.peek();
        if next == Some(close) {
            self.pos += 1;
            self.depth -= 1;
            self.first = false;
            return Ok(false);
        }
        if self.first {
            self.first = false;
        } else if next == Some(b',') {
            self.pos += 1;
        } else {
            return Err(self.error("expected a comma or the container's end"));
        }
        Ok(true)
    }

    /// A string at the scanner (its opening quote next), as text: borrowed when it has
    /// no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let start = self.pos;
        self.pos += 1;
        let escaped = self
            .skip_string()
            .map_err(|Failed(what)| self.error(what))?;
        let text = &self.text[start..self.pos];
        if !escaped {
            return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
        }
        serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|_| ScanError {
                what: "invalid escape",
                at: start,
            })
    }

    /// Reads past a string's text and closing quote (its opening quote taken); answers
    /// whether it had escapes.
    fn skip_string(&mut self) -> Result<bool, Failed> {
        let bytes = self.bytes();
        let mut escaped = false;
        loop {
            // Eight bytes at a time up to the first quote, backslash or control character.
            while let Some(chunk) = bytes.get(self.pos..self.pos + 8) {
                let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
                let special =
                    equal_bytes(word, b'"') | equal_bytes(word, b'\\') | control_bytes(word);
                if special != 0 {
                    self.pos += (special.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
            match bytes.get(self.pos) {
                None => return Err(Failed("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(escaped);
                }
                Some(b'\\') => {
                    escaped = true;
                    self.skip_escape()?;
                }
                Some(c) if *c < 0x20 => return Err(Failed("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Past one escape (the scanner at its backslash).
    fn skip_escape(&mut self) -> Result<(), Failed> {
        let bytes = self.bytes();
        match bytes.get(self.pos + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => {
                let hex = bytes.get(self.pos + 2..self.pos + 6);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return Err(Failed("invalid escape"));
                }
                self.pos += 6;
                Ok(())
            }
            _ => Err(Failed("invalid escape")),
        }
    }

    /// Past a number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn skip_number(&mut self) -> Result<(), Failed> {
        let bytes = self.bytes();
        if bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Failed("invalid number")),
        }
        if bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(Failed("invalid number"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = bytes.get(self.pos) {
                self.pos += 1;
            }
            if !bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                return Err(Failed("invalid number"));
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        let bytes = self.bytes();
        while bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
    }

    fn literal(&mut self, word: &'static str) -> Result<(), Failed> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Failed("expected a value"))
        }
    }
}

/// Checks that `bytes` are one JSON text.
pub fn validate(bytes: &[u8]) -> Result<(), ScanError> {
    let mut scanner = Scanner::new(bytes)?;
    scanner.skip_value()?;
    scanner.end()
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `byte`; exact up to and including the
/// lowest one set (a borrow can only mark bytes above a byte that matched).
fn equal_bytes(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bit of each byte of `word` below 0x20, exact like [`equal_bytes`].
fn control_bytes(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS
}

#[cfg(test)]
mod tests;
