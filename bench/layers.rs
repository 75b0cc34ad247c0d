//! What each middleware layer of `app serve` costs a request, measured in-process: the app's own layers (the
//! functions `http::router::app` assembles) are stacked one by one around a trivial route (the `/healthz` handler),
//! and N requests are sent through each stack with `tower::ServiceExt::oneshot` on one thread. No sockets and no
//! HTTP parsing, so the differences between rows are the layers alone. Each row is the best of 5 rounds, taken in
//! turns, so that a busy machine disturbs every row alike.
//!
//! Built only with `--features bench`: `cargo run --release --features bench --example layers [N]`.
//! The access-log row writes JSON lines through the same batched writer as the app, into a sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use app::http::hosts::{self, AllowedHosts};
use app::http::{access_log, health, request_id, security_headers};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::middleware;
use axum::routing::get;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;
use tower_http::timeout::TimeoutLayer;

#[derive(Clone, Copy, PartialEq)]
enum Layer {
    SecurityHeaders,
    RequestId,
    AccessLog,
    Metrics,
    HostCheck,
    Compression,
    Timeout,
}

/// Cumulative, in the order of `http::router::app` from the outside in (the access log sits just inside the request
/// id, but is added last, as its own row). The first three rows are what a probe goes through.
const STACKS: [(&str, &[Layer]); 8] = [
    ("route only", &[]),
    ("+ security headers", &[Layer::SecurityHeaders]),
    ("+ request id", &[Layer::RequestId]),
    ("+ metrics", &[Layer::Metrics]),
    ("+ Host check", &[Layer::HostCheck]),
    ("+ compression (skipped: tiny body)", &[Layer::Compression]),
    ("+ timeout", &[Layer::Timeout]),
    ("+ access line (JSON) = a page's stack", &[Layer::AccessLog]),
];

/// The layers of `http::router::app` in the same order.
fn stack(layers: &[Layer]) -> Router {
    let has = |l: Layer| layers.contains(&l);
    let mut r = Router::new().route("/healthz", get(health::healthz));
    if has(Layer::Timeout) {
        r = r.layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ));
    }
    if has(Layer::Compression) {
        r = r.layer(CompressionLayer::new().compress_when(SizeAbove::new(1024)));
    }
    if has(Layer::HostCheck) {
        r = r.layer(middleware::from_fn_with_state(
            Arc::new(AllowedHosts::new(vec!["localhost".into()])),
            hosts::check,
        ));
    }
    if has(Layer::Metrics) {
        r = r.layer(middleware::from_fn(
            app::http::request_metrics::track_requests,
        ));
    }
    if has(Layer::AccessLog) {
        r = r.layer(middleware::from_fn(access_log::log));
    }
    if has(Layer::RequestId) {
        r = r.layer(middleware::from_fn(request_id::propagate));
    }
    if has(Layer::SecurityHeaders) {
        r = r.layer(middleware::map_response(security_headers::add));
    }
    r
}

async fn per_request(router: &Router, n: u32) -> Duration {
    let started = Instant::now();
    for _ in 0..n {
        let request = Request::get("/healthz")
            .header(header::HOST, "localhost")
            .body(Body::empty())
            .expect("a valid request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
    started.elapsed() / n
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let (writer, _guard) =
        app::log_writer::BatchedWriter::spawn(std::io::sink()).expect("a log writer thread");
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_writer(writer)
        .init();
    let _ = app::metrics::handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut layers = Vec::new();
        let routers: Vec<Router> = STACKS
            .iter()
            .map(|(_, added)| {
                layers.extend_from_slice(added);
                stack(&layers)
            })
            .collect();
        let mut best = vec![u128::MAX; routers.len()];
        for _round in 0..5 {
            for (router, best) in routers.iter().zip(&mut best) {
                per_request(router, n / 10).await; // warm-up
                *best = (*best).min(per_request(router, n).await.as_nanos());
            }
        }
        println!("{n} requests per row through GET /healthz, one thread, in-process, best of 5");
        println!("{:<40} {:>8} {:>9}", "stack", "ns/req", "layer ns");
        let mut previous: Option<u128> = None;
        for ((name, _), ns) in STACKS.iter().zip(best) {
            let delta = previous.map_or("-".to_string(), |p| (ns as i128 - p as i128).to_string());
            println!("{name:<40} {ns:>8} {delta:>9}");
            previous = Some(ns);
        }
    });
}
