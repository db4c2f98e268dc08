//! Push for OFREP providers (SPEC.md §5): `GET /ofrep/v1/events`, a
//! server-sent-events stream that says `refetchEvaluation` whenever the
//! agent applies a change, advertised in the bulk answer's `eventStreams`
//! (OFREP ADR-0008).
//!
//! - **Events.** `id:` is the applied revision, `data:` is
//!   `{"type":"refetchEvaluation"}`; providers then re-fetch the bulk
//!   evaluation (a 304 when nothing changed for their context). One event
//!   per change of what is served; a watermark that merely moves sends
//!   nothing.
//! - **Resume.** A client that comes back with a `Last-Event-ID` other than
//!   the current revision has missed something (or the bucket was created
//!   again and revisions restarted): it gets an event at once.
//! - **Keep-alive.** A comment line every `event_stream_keep_alive_ms`, so
//!   proxies and clients see the stream alive.
//! - **Nobody waits for a client.** The sync actor announces a change by
//!   writing one value into a [`tokio::sync::watch`] channel: it never
//!   awaits, never holds a lock a stream holds, and a stream that is not
//!   read (a stalled client) only ever sees the latest value when it is
//!   polled again; changes in between coalesce into one event. A stalled
//!   client holds its stream slot (and its connection slot) until its
//!   socket fails, nothing more.
//! - **A cap.** At most `max_event_streams` streams are open; one more is
//!   answered 503 with `Retry-After`. Streams end when the agent stops.

use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use phasegate_proto::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::http::ApiState;
use crate::served::Served;

/// Where the stream is served.
pub(crate) const EVENTS_PATH: &str = "/ofrep/v1/events";

/// How long a client waits before reconnecting (`retry:`), in ms.
const RETRY_MS: u64 = 1_000;

/// Seconds a refused client is told to wait (`Retry-After`).
const RETRY_AFTER_S: &str = "5";

/// The routes of the push endpoint.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route(EVENTS_PATH, get(events).options(crate::ofrep::preflight))
}

/// What the streams watch.
#[derive(Debug)]
struct Announced {
    /// The applied revision when the served snapshot last changed: the
    /// stream's position, and the id of its last event.
    revision: u64,
    /// The snapshot announced last, to tell a change from a watermark
    /// move (weak: the hub keeps no snapshot alive, and while this points
    /// at it, its address cannot be reused by another).
    served: Weak<Served>,
    /// The agent is stopping: streams end.
    closed: bool,
}

/// The hub between the sync actor and the event streams.
#[derive(Debug)]
pub(crate) struct Push {
    tx: watch::Sender<Announced>,
    slots: Arc<Semaphore>,
    max_streams: usize,
    keep_alive: Duration,
}

impl Push {
    /// A hub for at most `max_streams` streams, each sending a keep-alive
    /// every `keep_alive`.
    pub(crate) fn new(max_streams: usize, keep_alive: Duration) -> Self {
        let (tx, _) = watch::channel(Announced {
            revision: 0,
            served: Weak::new(),
            closed: false,
        });
        Self {
            tx,
            slots: Arc::new(Semaphore::new(max_streams)),
            max_streams,
            keep_alive,
        }
    }

    /// Says that `served` is what the agent serves as of `revision`; the
    /// streams hear of it when it is another snapshot than the last one
    /// announced. Never waits.
    pub(crate) fn announce(&self, revision: u64, served: &Arc<Served>) {
        self.tx.send_if_modified(|a| {
            if a.closed || std::ptr::eq(a.served.as_ptr(), Arc::as_ptr(served)) {
                // Only the watermark moved: every answer is the same, and
                // the stream's position stays the last change's revision,
                // so a client that saw that change is not sent it again.
                return false;
            }
            a.revision = revision;
            a.served = Arc::downgrade(served);
            true
        });
    }

    /// Ends every stream (the agent stops).
    pub(crate) fn close(&self) {
        self.tx.send_modify(|a| a.closed = true);
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.max_streams
            .saturating_sub(self.slots.available_permits())
    }
}

/// One SSE event saying "re-fetch", with the revision as its id.
fn refetch(revision: u64) -> Bytes {
    Bytes::from(format!(
        "id: {revision}\ndata: {{\"type\":\"refetchEvaluation\"}}\n\n"
    ))
}

const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// A stream's state between two chunks.
struct Stream {
    rx: watch::Receiver<Announced>,
    /// Sent before anything else: `retry:`, and the catch-up event.
    first: Option<Bytes>,
    ticker: Interval,
    /// Freed when the stream ends, whichever way.
    _slot: OwnedSemaphorePermit,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(first), self));
        }
        tokio::select! {
            changed = self.rx.changed() => {
                // The hub is gone: the agent is stopping.
                changed.ok()?;
                let (revision, closed) = {
                    let a = self.rx.borrow_and_update();
                    (a.revision, a.closed)
                };
                if closed {
                    return None;
                }
                Some((Ok(refetch(revision)), self))
            }
            _ = self.ticker.tick() => Some((Ok(Bytes::from_static(KEEP_ALIVE)), self)),
        }
    }
}

/// `GET /ofrep/v1/events`.
async fn events(State(h): State<ApiState>, headers: HeaderMap) -> Response {
    let push = &h.shared.push;
    let Ok(slot) = push.slots.clone().try_acquire_owned() else {
        let mut r = crate::http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            format!(
                "{} event streams are open, the most this agent serves; retry later, or poll",
                push.max_streams
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        return crate::ofrep::cors(r);
    };
    let mut rx = push.tx.subscribe();
    let (current, closed) = {
        let a = rx.borrow_and_update();
        (a.revision, a.closed)
    };
    // A client that resumes from another revision has missed a change.
    let behind = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|id| id.trim() != current.to_string());
    let mut first = format!("retry: {RETRY_MS}\n: phasegate revision {current}\n\n").into_bytes();
    if behind {
        first.extend_from_slice(&refetch(current));
    }
    let mut ticker = tokio::time::interval_at(Instant::now() + push.keep_alive, push.keep_alive);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = Stream {
        rx,
        first: Some(Bytes::from(first)),
        ticker,
        _slot: slot,
    };
    let body = if closed {
        Body::empty()
    } else {
        Body::from_stream(futures_util::stream::unfold(stream, Stream::next))
    };
    let r = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            // Tells nginx-like proxies not to buffer the stream.
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response();
    crate::ofrep::cors(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn announces_changes_of_the_snapshot_not_watermark_moves() {
        let push = Push::new(2, Duration::from_secs(3600));
        let mut rx = push.tx.subscribe();
        let a = Arc::new(Served::default());
        push.announce(5, &a);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().revision, 5);
        // The same snapshot under a higher watermark: no event, and the
        // position stays the change's.
        push.announce(9, &a);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(rx.borrow().revision, 5);
        let b = Arc::new(Served::default());
        push.announce(12, &b);
        assert_eq!(rx.borrow_and_update().revision, 12);
        push.close();
        assert!(rx.borrow_and_update().closed);
    }

    #[tokio::test]
    async fn a_stream_catches_up_then_ends_when_closed() {
        let push = Push::new(1, Duration::from_secs(3600));
        let slot = push.slots.clone().try_acquire_owned().unwrap();
        assert_eq!(push.open(), 1);
        assert!(push.slots.clone().try_acquire_owned().is_err());
        let ticker = tokio::time::interval_at(Instant::now() + push.keep_alive, push.keep_alive);
        let stream = Stream {
            rx: push.tx.subscribe(),
            first: Some(Bytes::from_static(b"first")),
            ticker,
            _slot: slot,
        };
        let mut s = Box::pin(futures_util::stream::unfold(stream, Stream::next));
        assert_eq!(s.next().await.unwrap().unwrap(), "first");
        push.announce(3, &Arc::new(Served::default()));
        assert_eq!(
            s.next().await.unwrap().unwrap(),
            "id: 3\ndata: {\"type\":\"refetchEvaluation\"}\n\n"
        );
        push.close();
        assert!(s.next().await.is_none());
        drop(s);
        assert_eq!(push.open(), 0);
    }
}
