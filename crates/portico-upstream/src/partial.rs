//! Answers handed on before their body has all arrived: [`FhirUpstream::execute_partial`].
//!
//! A search answer can be large (a `$everything`-sized page, a history). Its reader, the
//! gateway's streamed Bundle check, can verify and pass on its entries as they come, so
//! the body need not be held whole: the client reads the first [`WHOLE_UP_TO`] bytes,
//! and an answer that ends within them is a whole answer, checked and retried exactly as
//! [`FhirUpstream::execute`] does it. A longer one is handed on as its first part and
//! the rest of its body ([`BodyRest`]); nothing checks that body as a whole (its reader
//! must), and nothing retries it once it has begun.
//!
//! [`FhirUpstream::execute_partial`]: crate::FhirUpstream::execute_partial
//! [`FhirUpstream::execute`]: crate::FhirUpstream::execute

use std::fmt;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sync_wrapper::SyncWrapper;
use tokio::sync::OwnedSemaphorePermit;

use crate::{FhirResponse, UpstreamError};

/// The body length up to which an answer is read whole before it is handed on.
pub const WHOLE_UP_TO: usize = 64 * 1024;

/// An answer from [`crate::FhirUpstream::execute_partial`].
#[derive(Debug)]
pub enum Answer {
    /// The whole answer.
    Whole(FhirResponse),
    /// The answer with the first part of its body (at least [`WHOLE_UP_TO`] bytes) in
    /// `body`, and the rest of the body as it arrives.
    Partial(FhirResponse, BodyRest),
}

/// The rest of an answer's body, in pieces as they arrive; an error ends it (the EHR
/// stopped, timed out or cut the connection). `Sync` (it is only ever read through
/// `&mut`), so that what holds it can be shared across an `await`.
pub struct BodyRest {
    pieces: SyncWrapper<Pieces>,
    /// The upstream concurrency slot the answer holds until its body has ended.
    slot: Option<OwnedSemaphorePermit>,
}

type Pieces = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

impl BodyRest {
    pub fn new(pieces: impl Stream<Item = Result<Bytes, UpstreamError>> + Send + 'static) -> Self {
        BodyRest {
            pieces: SyncWrapper::new(Box::pin(pieces)),
            slot: None,
        }
    }

    /// The same rest, holding `slot` until the body has ended (or is dropped).
    pub fn holding(mut self, slot: OwnedSemaphorePermit) -> Self {
        self.slot = Some(slot);
        self
    }

    /// The next piece; `None` when the body has ended.
    pub async fn next(&mut self) -> Option<Result<Bytes, UpstreamError>> {
        let next = self.pieces.get_mut().next().await;
        if !matches!(next, Some(Ok(_))) {
            self.slot = None;
        }
        next
    }
}

impl fmt::Debug for BodyRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BodyRest")
    }
}
