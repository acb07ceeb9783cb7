//! A search answer written while the EHR's is still arriving
//! ([`portico_guard::flow`]): the head with its links rewritten, each kept entry as it
//! is checked, then the members after the entries. URLs are rewritten piece by piece,
//! as [`render_json`] rewrites a whole answer (a base URL never spans two pieces: they
//! are cut between JSON values, outside strings).
//!
//! An answer that breaks off after its first piece ends the response body with an
//! error, which cuts the connection: the client sees a broken answer, never a wrong
//! whole one.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use portico_access::bundle_stream::{Piece, Writer};
use portico_guard::flow::{Flow, Flowed, Streamed};
use portico_guard::{Session, Unchecked};
use serde_json::{Map, Value};

use super::FhirResult;
use super::render::{fhir_body_response, fhir_bytes_response, render_json, rewrite_links};
use crate::state::AppState;

/// The answer to a search read as it arrives (see the module docs); whole when the
/// EHR's answer ended before its entries could stream.
pub(super) async fn streamed_answer(
    state: &AppState,
    session: Session<'_>,
    unchecked: Unchecked,
    self_link: Option<String>,
) -> FhirResult {
    let expires = state.cursor_expiry();
    let fingerprint = session.actor().fingerprint().to_owned();
    match session.stream_bundle(unchecked).await? {
        Streamed::Whole(mut verified, meta) => {
            rewrite_links(state, &fingerprint, &mut verified.head, self_link, expires);
            let body = render_json(state, verified.to_json());
            Ok(fhir_bytes_response(
                state,
                StatusCode::OK,
                body,
                Some(&meta),
            ))
        }
        Streamed::Flowing(flow) => {
            let meta = flow.meta.clone();
            let writing = Writing {
                state: state.clone(),
                flow,
                writer: Writer::default(),
                fingerprint,
                self_link,
                expires,
                head_links: false,
            };
            let body = Body::from_stream(futures::stream::unfold(Some(writing), next_bytes));
            Ok(fhir_body_response(state, StatusCode::OK, body, Some(&meta)))
        }
    }
}

/// A flowing answer being written.
struct Writing {
    state: AppState,
    flow: Flow,
    writer: Writer,
    fingerprint: String,
    self_link: Option<String>,
    expires: u64,
    /// Whether the head had the links (rewritten there); otherwise the end gets them.
    head_links: bool,
}

type Next = Option<(Result<Bytes, std::io::Error>, Option<Writing>)>;

/// About how much of the answer one piece of the response body holds: each piece is a
/// write to the client's socket.
const PIECE: usize = 32 * 1024;

/// The next bytes of the answer: what the next parts of the EHR's body completed, about
/// [`PIECE`] of it. An error cuts the answer off (what was pending with it).
async fn next_bytes(writing: Option<Writing>) -> Next {
    let mut w = writing?;
    let mut text = Vec::with_capacity(PIECE + PIECE / 2);
    while text.len() < PIECE {
        let flowed = match w.flow.next().await {
            Ok(Some(flowed)) => flowed,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "a streamed answer broke off; cutting it");
                return Some((Err(std::io::Error::other(e)), None));
            }
        };
        for flowed in flowed {
            match flowed {
                Flowed::Piece(Piece::Head(head)) => {
                    w.head_links = head.contains_key("link");
                    let head = if w.head_links { w.links(head) } else { head };
                    text.extend(Writer::head(&head));
                }
                Flowed::Piece(Piece::Entry(entry)) => {
                    text.extend_from_slice(w.writer.before_entry());
                    text.extend_from_slice(&entry);
                }
                Flowed::End(members) => {
                    let members = if w.head_links {
                        members
                    } else {
                        w.links(members)
                    };
                    text.extend(Writer::tail(&members));
                }
            }
        }
    }
    if text.is_empty() {
        return None;
    }
    Some((Ok(render_json(&w.state, text)), Some(w)))
}

impl Writing {
    /// `members` with the Bundle's links rewritten (or a self link added).
    fn links(&mut self, members: Map<String, Value>) -> Map<String, Value> {
        let mut bundle = Value::Object(members);
        let self_link = self.self_link.take();
        rewrite_links(
            &self.state,
            &self.fingerprint,
            &mut bundle,
            self_link,
            self.expires,
        );
        match bundle {
            Value::Object(members) => members,
            _ => Map::new(),
        }
    }
}
