//! [`Packed`]: bytes kept in memory LZ4-compressed when that saves space, else as they
//! are. The cache stores its bodies this way, and the gateway packs the answers it keeps
//! in an entry's [`portico_upstream::Derived`] slot the same way.
//!
//! FHIR JSON is repetitive (the same keys, systems and references in every entry), so
//! a stored search Bundle typically shrinks several-fold. Compressing costs a few
//! microseconds on the miss that stores it, and every hit decompresses again, about a
//! microsecond per 10 kB: small next to the whole of a cached read (the `packed`
//! benches; figures in docs/BENCHMARKS.md). Keeping a decompressed copy per entry would
//! save that microsecond at the price of the body's full size in memory.
//!
//! Bytes shorter than [`MIN_COMPRESSED_LEN`], and bytes that do not shrink by at least
//! an eighth, are kept as they are.

use bytes::Bytes;

/// Below this size compression saves too little to pay for itself.
pub const MIN_COMPRESSED_LEN: usize = 512;

/// Bytes kept in memory, compressed when that pays. Cloning shares the stored bytes.
#[derive(Clone)]
pub struct Packed(Stored);

#[derive(Clone)]
enum Stored {
    Plain(Bytes),
    Lz4 {
        /// The LZ4 block (no size prefix, no frame).
        compressed: Bytes,
        /// The length before compression.
        len: usize,
    },
}

impl std::fmt::Debug for Packed {
    /// Sizes only: the bytes are patient data.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packed")
            .field("len", &self.len())
            .field("stored_len", &self.stored_len())
            .finish()
    }
}

impl Packed {
    /// Packs `bytes`, compressed when they are at least [`MIN_COMPRESSED_LEN`] long and
    /// shrink by an eighth.
    pub fn pack(bytes: &[u8]) -> Packed {
        Packed::new(bytes, true)
    }

    /// Packs `bytes`, compressed only when `compress` is set and it pays. Either way the
    /// stored bytes get an allocation of their own size: a body the HTTP client handed
    /// over may be a slice of a larger read buffer, which a long-lived entry would keep
    /// alive whole.
    pub fn new(bytes: &[u8], compress: bool) -> Packed {
        if compress && bytes.len() >= MIN_COMPRESSED_LEN {
            let compressed = lz4_flex::block::compress(bytes);
            if compressed.len() <= bytes.len() - bytes.len() / 8 {
                return Packed(Stored::Lz4 {
                    // `into_boxed_slice` trims the compressor's worst-case capacity.
                    compressed: Bytes::from(compressed.into_boxed_slice()),
                    len: bytes.len(),
                });
            }
        }
        Packed(Stored::Plain(Bytes::copy_from_slice(bytes)))
    }

    /// Bytes held in memory (what a weigher or a budget should count).
    pub fn stored_len(&self) -> usize {
        match &self.0 {
            Stored::Plain(bytes) => bytes.len(),
            Stored::Lz4 { compressed, .. } => compressed.len(),
        }
    }

    /// The length of the bytes packed.
    pub fn len(&self) -> usize {
        match &self.0 {
            Stored::Plain(bytes) => bytes.len(),
            Stored::Lz4 { len, .. } => *len,
        }
    }

    /// Whether the bytes packed are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes packed, decompressed if need be. `None` if a compressed block does not
    /// decompress to its recorded length: never for blocks this type wrote; a caller
    /// treats the value as missing.
    pub fn unpack(&self) -> Option<Bytes> {
        match &self.0 {
            Stored::Plain(bytes) => Some(bytes.clone()),
            Stored::Lz4 { compressed, len } => {
                match lz4_flex::block::decompress(compressed, *len) {
                    Ok(plain) if plain.len() == *len => Some(Bytes::from(plain)),
                    _ => None,
                }
            }
        }
    }

    #[cfg(test)]
    fn is_compressed(&self) -> bool {
        matches!(self.0, Stored::Lz4 { .. })
    }

    /// A compressed block that does not decompress: for tests of what reads do with it.
    #[cfg(test)]
    pub(crate) fn unreadable() -> Packed {
        Packed(Stored::Lz4 {
            compressed: Bytes::from_static(&[0xF0, 0x00]),
            len: 4096,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(entries: usize) -> Vec<u8> {
        let entry = r#"{"fullUrl":"https://ehr.example/fhir/Observation/obs-1","resource":{"resourceType":"Observation","id":"obs-1","status":"final","subject":{"reference":"Patient/pat-1"}}}"#;
        let mut body = String::from(r#"{"resourceType":"Bundle","type":"searchset","entry":["#);
        body.push_str(&vec![entry; entries].join(","));
        body.push_str("]}");
        body.into_bytes()
    }

    #[test]
    fn compresses_json_and_round_trips() {
        let body = bundle(40);
        let packed = Packed::pack(&body);
        assert!(packed.is_compressed());
        assert!(
            packed.stored_len() * 4 < body.len(),
            "{} of {}",
            packed.stored_len(),
            body.len()
        );
        assert_eq!(packed.len(), body.len());
        assert_eq!(packed.unpack().unwrap(), body);
        assert_eq!(packed.clone().unpack().unwrap(), body);
        let debug = format!("{packed:?}");
        assert!(!debug.contains("Observation"), "{debug}");
    }

    #[test]
    fn keeps_bytes_as_they_are_when_off_small_or_incompressible() {
        let body = bundle(40);
        let off = Packed::new(&body, false);
        assert!(!off.is_compressed());
        assert_eq!(off.stored_len(), body.len());
        assert_eq!(off.unpack().unwrap(), body);

        let small = br#"{"resourceType":"Patient","id":"pat-1"}"#;
        assert!(!Packed::pack(small).is_compressed());
        assert!(Packed::pack(b"").is_empty());

        // A pseudo-random body (xorshift) does not shrink by an eighth.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()[0]
            })
            .collect();
        let packed = Packed::pack(&noise);
        assert!(!packed.is_compressed());
        assert_eq!(packed.unpack().unwrap(), noise);
    }

    #[test]
    fn a_corrupt_block_is_missing_not_a_panic() {
        let body = bundle(10);
        let Packed(Stored::Lz4 { compressed, len }) = Packed::pack(&body) else {
            panic!("expected a compressed body");
        };
        let truncated = Packed(Stored::Lz4 {
            compressed: compressed.slice(..compressed.len() / 2),
            len,
        });
        assert_eq!(truncated.unpack(), None);
        let wrong_len = Packed(Stored::Lz4 {
            compressed,
            len: len + 1,
        });
        assert_eq!(wrong_len.unpack(), None);
        assert_eq!(Packed::unreadable().unpack(), None);
    }
}
