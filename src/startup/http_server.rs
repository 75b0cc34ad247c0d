//! The HTTP/1.1 server loop of `app serve`: axum's `serve` with graceful shutdown, but for one case.
//!
//! At shutdown hyper closes every connection on which it has read nothing yet (hyper-util's protocol sniffing, which
//! `axum::serve` uses, cancels it the same way). A client that connected a moment before, its request maybe already
//! in the socket's buffer, then sees the connection closed without an answer and cannot know whether to send again.
//! In watch mode, where the old and the new process accept on one socket during a restart, that cost a request now
//! and then. So here a connection that has not sent its first request when the shutdown begins gets
//! [`FIRST_REQUEST_GRACE`] to send it, and is answered with `Connection: close`. Go's net/http has the same rule (a
//! new connection is closed at shutdown only after 5 s without a request); hyper#3808 proposes it for hyper.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::http::header::CONNECTION;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// How long a connection that has sent nothing yet may take, from the start of the shutdown, to send its first
/// request. A client sends it within milliseconds of connecting; one silent for a second is a browser's preconnect
/// or an idle pool's spare, and is closed.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Set once the server is going away: from then on every answer says `Connection: close`, so a client's kept-alive
/// connection ends after its answer instead of being closed under its next request. The owner may set it before
/// the server stops accepting (a lame-duck time); [`serve`] sets it when it stops.
#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn started(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `router` on the connections `listener` accepts until `shutdown` resolves; then stops accepting (the
/// listener is dropped) and returns once every connection has finished: in-flight requests are answered, idle
/// kept-alive connections closed, and connections that have not spoken yet get `first_request_grace` to do so.
pub async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    draining: Draining,
    shutdown: impl Future<Output = ()>,
    first_request_grace: Duration,
) {
    let (stopping_tx, stopping) = watch::channel(false);
    // Each connection holds a receiver; `closed()` resolves when the last one is dropped.
    let (finished_tx, finished) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (io, _remote) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let connection = serve_connection(
            io,
            router.clone(),
            draining.clone(),
            stopping.clone(),
            first_request_grace,
        );
        let finished = finished.clone();
        tokio::spawn(async move {
            connection.await;
            drop(finished);
        });
    }
    draining.start();
    let _ = stopping_tx.send(true);
    drop(listener);
    drop(finished);
    finished_tx.closed().await;
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    draining: Draining,
    mut stopping: watch::Receiver<bool>,
    first_request_grace: Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let first_request = Arc::new(FirstRequest::default());
    let service = hyper::service::service_fn({
        let first_request = first_request.clone();
        move |request: Request<Incoming>| {
            first_request.arrived();
            let (router, draining) = (router.clone(), draining.clone());
            async move {
                let mut response = router.oneshot(request.map(Body::new)).await?;
                if draining.started() {
                    response
                        .headers_mut()
                        .insert(CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        }
    });
    let mut connection = pin!(http1::Builder::new().serve_connection(TokioIo::new(io), service));
    tokio::select! {
        result = connection.as_mut() => return finished(result),
        _ = stopping.wait_for(|stopping| *stopping) => {}
    }
    if !first_request.seen() {
        tokio::select! {
            result = connection.as_mut() => return finished(result),
            () = first_request.wait() => {}
            () = tokio::time::sleep(first_request_grace) => {}
        }
    }
    // Answers what is in flight with `Connection: close`, then closes; closes an idle connection now.
    connection.as_mut().graceful_shutdown();
    finished(connection.await);
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(err) = result {
        tracing::trace!(error = %err, "connection ended with an error");
    }
}

/// Whether a connection has passed its first request to the router yet, and a way to wait for it.
#[derive(Default)]
struct FirstRequest {
    seen: AtomicBool,
    notify: Notify,
}

impl FirstRequest {
    fn arrived(&self) {
        if !self.seen.swap(true, Ordering::Relaxed) {
            // notify_one keeps a permit when nobody waits yet, so a later `wait` returns at once.
            self.notify.notify_one();
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::Relaxed)
    }

    async fn wait(&self) {
        self.notify.notified().await;
    }
}

#[cfg(test)]
mod tests;
