//! `app healthcheck`: the images have no shell and no curl, so compose healthchecks call the binary itself.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use crate::config::{DEFAULT_LISTEN_ADDR, DEFAULT_METRICS_ADDR};

/// Probes `url` (default: [`default_url`]) and says what it found, on stdout when healthy and stderr when not.
pub async fn run(url: Option<String>, metrics: bool) -> ExitCode {
    let url = url.unwrap_or_else(|| default_url(metrics));
    match check(&url).await {
        Ok(status) => {
            println!("healthy: {url} answered {status}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("unhealthy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The whole check (connect, request, response) must finish within this.
pub const BUDGET: Duration = Duration::from_secs(2);

/// `http://127.0.0.1:<port of LISTEN_ADDR>/healthz`, or with `metrics`
/// `http://127.0.0.1:<port of METRICS_ADDR>/metrics` (the worker serves only that port). Read straight from the
/// environment: a healthcheck needs no valid configuration.
pub fn default_url(metrics: bool) -> String {
    let (variable, default, path) = if metrics {
        ("METRICS_ADDR", DEFAULT_METRICS_ADDR, "/metrics")
    } else {
        ("LISTEN_ADDR", DEFAULT_LISTEN_ADDR, "/healthz")
    };
    let port = std::env::var(variable)
        .ok()
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .unwrap_or(default)
        .port();
    format!("http://127.0.0.1:{port}{path}")
}

/// GETs `url` (plain HTTP); Ok with the status when it is 2xx, else a message saying what went wrong.
pub async fn check(url: &str) -> Result<u16, String> {
    match tokio::time::timeout(BUDGET, get(url)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from {url} within {BUDGET:?}")),
    }
}

async fn get(url: &str) -> Result<u16, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("only http:// URLs are supported, got {url}"));
    }
    let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(connection);
    let authority = uri.authority().map_or(host.to_string(), |a| a.to_string());
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("{url} answered {status}"))
    }
}
