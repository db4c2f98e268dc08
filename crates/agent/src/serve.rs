//! Serving the HTTP API to clients that may be slow, stuck or hostile.
//!
//! `axum::serve` has no timeouts and no connection cap, so one client
//! opening connections and trickling a byte a second (slowloris) would
//! hold them all forever. This loop serves each connection with hyper's
//! HTTP/1 builder itself:
//!
//! - **Connection cap.** A connection takes a slot of a semaphore
//!   (`max_connections`) when accepted and frees it when it ends. One
//!   accepted with no slot free is closed at once: never queued, so the
//!   accept loop, and the connections already served, never wait on it.
//! - **Header read timeout.** hyper closes a connection that has not sent
//!   a whole request head within `header_read_timeout`, counted from when
//!   it starts waiting for one. That is also the keep-alive idle timeout:
//!   between requests hyper waits for the next head, so an idle
//!   connection gives its slot back after the same time.
//! - **Body read timeout** is enforced where bodies are read
//!   (`http::body`), answered 408 with the JSON error envelope.
//! - **Bounded buffers.** A request head may take at most
//!   [`MAX_BUF_BYTES`] (more is answered 431 by hyper), so the memory a
//!   connection can pin is small and the cap bounds the total.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// hyper's read buffer per connection, which bounds a request head.
/// Bodies stream through it in chunks, so they are not limited by it.
pub(crate) const MAX_BUF_BYTES: usize = 32 * 1024;

/// The longest a stopping agent waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the accept loop backs off after an error that is not the
/// client's (out of file descriptors): pacing, so a full table does not
/// spin the loop, not synchronisation.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The limits of the HTTP server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest wait for a whole request head, and keep-alive idle time.
    pub(crate) header_read_timeout: Duration,
    /// Most connections open at once.
    pub(crate) max_connections: usize,
}

/// Serves `app` on `listener` until `stop` resolves, then lets requests in
/// flight finish for at most [`SHUTDOWN_GRACE`].
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shared: Arc<crate::served::Shared>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    // Fired when the shutdown grace is over: connections still open are
    // dropped, so a stopped agent leaves no task behind.
    let (force, forced) = tokio::sync::watch::channel(());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let builder = http1_builder(limits);
    tokio::pin!(stop);
    loop {
        let sock = tokio::select! {
            r = listener.accept() => match r {
                Ok((sock, _)) => sock,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Every slot is taken: close at once (dropping the socket),
            // rather than queue it behind connections that may never end.
            count_refused(&shared, limits.max_connections);
            continue;
        };
        // Answers are small: send them at once rather than wait for more.
        let _ = sock.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(sock), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        shared.http.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(conn, slot, shared.clone(), forced.clone()));
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("http connections still open after the shutdown grace; closing them");
    }
    let _ = force.send(());
}

/// hyper's HTTP/1 server with the header timeout and buffer bound.
fn http1_builder(limits: Limits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUF_BYTES)
        .keep_alive(true);
    builder
}

/// Counts a connection refused for want of a slot; logs only when the
/// count so far is a power of two, so a flood of them does not flood the
/// log.
fn count_refused(shared: &crate::served::Shared, max_connections: usize) {
    let n = shared.http.refused.fetch_add(1, Ordering::Relaxed);
    if n.is_power_of_two() {
        tracing::warn!(
            refused = n + 1,
            max_connections,
            "connection refused: too many open connections"
        );
    }
}

/// Serves one connection until it ends or the shutdown grace is over;
/// then gives its slot back.
async fn connection<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    slot: OwnedSemaphorePermit,
    shared: Arc<crate::served::Shared>,
    mut forced: tokio::sync::watch::Receiver<()>,
) {
    tokio::select! {
        r = conn => if let Err(e) = r {
            // Timeouts and clients that go away land here: routine.
            tracing::debug!(error = %e, "http connection ended");
        },
        _ = forced.changed() => {}
    }
    shared.http.open.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
}

async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}
