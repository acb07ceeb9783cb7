//! How a cached body is stored: LZ4-compressed when that saves space, else as is.
//!
//! FHIR JSON is repetitive (the same keys, systems and references in every entry), so
//! a stored search Bundle typically shrinks several-fold (a sandbox patient's 10 kB
//! laboratory search: 6.5×). Compressing it costs ~3 µs on the miss that stores it, and
//! every hit decompresses it again, ~1 µs, next to the ~70 µs of CPU a whole cached
//! read costs the gateway (docs/BENCHMARKS.md). Keeping a decompressed copy per entry
//! would save that microsecond at the price of the body's full size in memory; what
//! consumers derive from a hot entry is kept in its [`portico_upstream::Derived`] slot
//! instead.
//!
//! Bodies shorter than [`MIN_COMPRESSED_LEN`], and bodies that do not shrink by at least
//! an eighth, are stored as they are.

use bytes::Bytes;

/// Below this size compression saves too little to pay for itself.
pub(crate) const MIN_COMPRESSED_LEN: usize = 512;

/// A stored response body.
#[derive(Debug, Clone)]
pub(crate) enum StoredBody {
    Plain(Bytes),
    Lz4 {
        /// The LZ4 block (no size prefix, no frame).
        compressed: Bytes,
        /// The body's length before compression.
        len: usize,
    },
}

impl StoredBody {
    /// Stores `body`, compressed when `compress` is set and it pays. Either way the
    /// stored bytes get an allocation of their own size: a body the HTTP client handed
    /// over may be a slice of a larger read buffer, which a long-lived entry would keep
    /// alive whole.
    pub(crate) fn new(body: &[u8], compress: bool) -> StoredBody {
        if compress && body.len() >= MIN_COMPRESSED_LEN {
            let compressed = lz4_flex::block::compress(body);
            if compressed.len() <= body.len() - body.len() / 8 {
                return StoredBody::Lz4 {
                    // `into_boxed_slice` trims the compressor's worst-case capacity.
                    compressed: Bytes::from(compressed.into_boxed_slice()),
                    len: body.len(),
                };
            }
        }
        StoredBody::Plain(Bytes::copy_from_slice(body))
    }

    /// Bytes held in storage (what the weigher counts).
    pub(crate) fn stored_len(&self) -> usize {
        match self {
            StoredBody::Plain(bytes) => bytes.len(),
            StoredBody::Lz4 { compressed, .. } => compressed.len(),
        }
    }

    /// The plain body. `None` if the stored block does not decompress to its recorded
    /// length (never for blocks this module wrote; the caller then treats the entry as
    /// missing).
    pub(crate) fn plain(&self) -> Option<Bytes> {
        match self {
            StoredBody::Plain(bytes) => Some(bytes.clone()),
            StoredBody::Lz4 { compressed, len } => {
                match lz4_flex::block::decompress(compressed, *len) {
                    Ok(plain) if plain.len() == *len => Some(Bytes::from(plain)),
                    _ => None,
                }
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn is_compressed(&self) -> bool {
        matches!(self, StoredBody::Lz4 { .. })
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
        let stored = StoredBody::new(&body, true);
        assert!(stored.is_compressed());
        assert!(
            stored.stored_len() * 4 < body.len(),
            "{} of {}",
            stored.stored_len(),
            body.len()
        );
        assert_eq!(stored.plain().unwrap(), body);
        assert_eq!(stored.plain().unwrap(), body);
    }

    #[test]
    fn stores_plain_when_off_small_or_incompressible() {
        let body = bundle(40);
        let off = StoredBody::new(&body, false);
        assert!(!off.is_compressed());
        assert_eq!(off.stored_len(), body.len());
        assert_eq!(off.plain().unwrap(), body);

        let small = br#"{"resourceType":"Patient","id":"pat-1"}"#;
        assert!(!StoredBody::new(small, true).is_compressed());

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
        let stored = StoredBody::new(&noise, true);
        assert!(!stored.is_compressed());
        assert_eq!(stored.plain().unwrap(), noise);
    }

    #[test]
    fn a_corrupt_block_is_missing_not_a_panic() {
        let body = bundle(10);
        let StoredBody::Lz4 {
            compressed, len, ..
        } = StoredBody::new(&body, true)
        else {
            panic!("expected a compressed body");
        };
        let truncated = StoredBody::Lz4 {
            compressed: compressed.slice(..compressed.len() / 2),
            len,
        };
        assert_eq!(truncated.plain(), None);
        let wrong_len = StoredBody::Lz4 {
            compressed,
            len: len + 1,
        };
        assert_eq!(wrong_len.plain(), None);
    }
}
