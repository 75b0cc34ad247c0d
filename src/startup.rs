//! Building and running the web server (zero2prod's `Application::build` / `run_until_stopped`) and the `app()`
//! router it serves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::CONNECTION;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post};
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use crate::config::Settings;
use crate::http::api_token::{self, ApiToken};
use crate::http::hosts::{self, AllowedHosts};
use crate::http::{
    access_log, health, page, request_id, security_headers, static_files, tasks_api,
};
use crate::state::AppState;
use crate::tasks::Queue;

/// Smaller bodies are sent as they are: below about a kilobyte gzip saves a few hundred bytes at best and costs
/// more CPU than the bytes are worth. Already-encoded bodies (the `.gz` static files) are never compressed again.
const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// The full router: the pages and the API with the whole middleware stack, and the probes beside it with only what
/// every answer needs. Layers run top to bottom for a request:
///
/// * every answer: security headers (so every answer has them, a refused Host too), request id;
/// * pages and API: access log, metrics, Host check, compression, timeout, body limit, the API token (only with
///   `API_TOKEN`, and only for `/api/...`), then the route;
/// * probes (`/healthz`, `/readyz`): the route (plus the access log with `LOG_PROBES=true`). An orchestrator
///   calls them by IP every few seconds: no Host check, no access line, no request metrics, and nothing else
///   that would make liveness cost more than answering. `/readyz` bounds its own checks (800 ms each).
///
/// What each layer costs is measured by `bench/layers.rs` (see bench/README.md).
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let mut site = Router::new()
        .route("/", get(page::status_page))
        .route("/tasks", post(page::enqueue_form))
        .route("/api/tasks", post(tasks_api::create).get(tasks_api::list))
        .route("/api/tasks/{id}", get(tasks_api::get));
    if settings.debug {
        site = match &settings.static_dir {
            Some(dir) => site.nest_service("/static", ServeDir::new(dir)),
            None => site.route("/static/{*path}", get(static_files::embedded)),
        };
    }
    let mut site = site.fallback(|| async {
        crate::http::error::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    });
    if let Some(token) = &settings.api_token {
        site = site.layer(middleware::from_fn_with_state(
            Arc::new(ApiToken::new(token)),
            api_token::require,
        ));
    }
    let site = site
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE_BYTES)
                    .and(NotForContentType::GRPC)
                    .and(NotForContentType::IMAGES)
                    .and(NotForContentType::SSE),
            ),
        )
        .layer(middleware::from_fn_with_state(
            Arc::new(AllowedHosts::new(settings.allowed_hosts.clone())),
            hosts::check,
        ))
        .layer(middleware::from_fn(crate::metrics::track_requests))
        .layer(middleware::from_fn(access_log::log));
    let mut probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if settings.log_probes {
        probes = probes.layer(middleware::from_fn(access_log::log));
    }
    site.merge(probes)
        .layer(middleware::from_fn(request_id::propagate))
        .layer(middleware::map_response(security_headers::add))
        .with_state(state)
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    router: Router,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
}

impl Application {
    /// Binds both listeners and connects to Redis (PostgreSQL is connected lazily). Call after the dependencies
    /// are up (`wait::wait_for_dependencies`).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let metrics_listener = TcpListener::bind(settings.metrics_addr).await?;
        let pool = crate::db::pool(&settings);
        let queue =
            Queue::connect(settings.redis_url.expose_secret(), &settings.queue.name).await?;
        let (shutdown_timeout, shutdown_delay) =
            (settings.shutdown_timeout, settings.shutdown_delay);
        let state = AppState::new(settings, pool, queue);
        Ok(Self {
            listener,
            metrics_listener,
            router: app(state),
            shutdown_timeout,
            shutdown_delay,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn metrics_addr(&self) -> std::io::Result<SocketAddr> {
        self.metrics_listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then for `SHUTDOWN_DELAY` more (the lame-duck time: a proxy that still
    /// has this replica's address, or an idle connection to it, meets a server that answers, until it has seen the
    /// replica go), then stops accepting and lets in-flight requests finish for at most `SHUTDOWN_TIMEOUT`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.listener.local_addr()?;
        let metrics_addr = self.metrics_listener.local_addr()?;
        tracing::info!(%addr, %metrics_addr, "serving");
        let metrics = tokio::spawn(
            axum::serve(
                self.metrics_listener,
                crate::metrics::router(crate::metrics::handle()),
            )
            .into_future(),
        );
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let delay = self.shutdown_delay;
        // From the signal on, every answer says `Connection: close`, so a kept-alive connection used during the
        // lame duck ends after its answer; idle ones nginx closes itself (upstream keepalive_timeout 2 s, below
        // SHUTDOWN_DELAY). None is left for the server to close under a request being written: a proxy could not
        // retry a POST written to a connection the server is closing at that moment.
        let draining = Arc::new(AtomicBool::new(false));
        let router = self.router.layer(middleware::map_response({
            let draining = draining.clone();
            move |mut response: Response| {
                let draining = draining.load(Ordering::Relaxed);
                async move {
                    if draining {
                        response
                            .headers_mut()
                            .insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    response
                }
            }
        }));
        let server = axum::serve(self.listener, router.into_make_service()).with_graceful_shutdown(
            async move {
                shutdown.await;
                draining.store(true, Ordering::Relaxed);
                if !delay.is_zero() {
                    tracing::info!(
                        delay_s = delay.as_secs_f64(),
                        "lame duck: still serving (SHUTDOWN_DELAY)"
                    );
                    tokio::time::sleep(delay).await;
                }
                tracing::info!("shutting down: finishing in-flight requests");
                let _ = stopping_tx.send(true);
            },
        );
        let mut server = tokio::spawn(server.into_future());
        let deadline = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        let result = tokio::select! {
            joined = &mut server => joined.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)),
            () = deadline => {
                tracing::warn!(timeout_s = self.shutdown_timeout.as_secs_f64(), "shutdown timeout: dropping unfinished requests");
                server.abort();
                Ok(())
            }
        };
        metrics.abort();
        tracing::info!("server stopped");
        result
    }
}
