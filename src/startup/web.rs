//! Building and running the web server (zero2prod's `Application::build` / `run_until_stopped`), which serves
//! `http::router::app()`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use super::http_server::{self, Draining, FIRST_REQUEST_GRACE};
use crate::config::Settings;
use crate::db;
use crate::http::{metrics_endpoint, router::app, state::AppState};
use crate::tasks::Queue;

pub struct Application {
    listener: TcpListener,
    metrics_listener: TcpListener,
    router: Router,
    shutdown_timeout: Duration,
    shutdown_delay: Duration,
}

impl Application {
    /// Applies the migrations with `MIGRATE_ON_START`, binds both listeners and connects to Redis (PostgreSQL is
    /// connected lazily). Call after the dependencies are up (`commands::wait`), on the runtime that serves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_on(settings, None).await
    }

    /// [`Application::build`], serving on `inherited` (the socket a holder passed, see
    /// [`inherited_listener`](super::inherited_listener)) instead of binding LISTEN_ADDR when it is given.
    pub async fn build_on(
        settings: Settings,
        inherited: Option<std::net::TcpListener>,
    ) -> anyhow::Result<Self> {
        db::migrate_on_start(&settings).await?;
        let listener = match inherited {
            Some(listener) => {
                let listener = TcpListener::from_std(listener)?;
                tracing::info!(addr = %listener.local_addr()?, "serving on the inherited socket (LISTEN_FDS)");
                listener
            }
            None => TcpListener::bind(settings.listen_addr).await?,
        };
        let metrics_listener = TcpListener::bind(settings.metrics_addr).await?;
        let db = crate::db::pool(&settings);
        let queue =
            Queue::connect(settings.redis_url.expose_secret(), &settings.tasks.name).await?;
        let (shutdown_timeout, shutdown_delay) =
            (settings.shutdown_timeout, settings.shutdown_delay);
        let state = AppState::new(settings, db, queue);
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
        let metrics = metrics_endpoint::spawn(self.metrics_listener);
        let (stopping_tx, mut stopping) = tokio::sync::watch::channel(false);
        let delay = self.shutdown_delay;
        // From the signal on, every answer says `Connection: close`, so a kept-alive connection used during the
        // lame duck ends after its answer; idle ones nginx closes itself (upstream keepalive_timeout 2 s, below
        // SHUTDOWN_DELAY). None is left for the server to close under a request being written: a proxy could not
        // retry a POST written to a connection the server is closing at that moment.
        let draining = Draining::default();
        let server = http_server::serve(
            self.listener,
            self.router,
            draining.clone(),
            async move {
                shutdown.await;
                draining.start();
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
            FIRST_REQUEST_GRACE,
        );
        let mut server = tokio::spawn(server);
        let deadline = async {
            let _ = stopping.wait_for(|s| *s).await;
            tokio::time::sleep(self.shutdown_timeout).await;
        };
        let result = tokio::select! {
            joined = &mut server => joined.map_err(anyhow::Error::from),
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
