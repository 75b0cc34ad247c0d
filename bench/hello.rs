//! The benchmark's reference row: a bare axum "hello" route with the app's axum, tokio runtime and allocator (the
//! system one), and nothing else. What it serves per second is the ceiling of a Rust route on the machine, the
//! yardstick for `/healthz` direct.
//!
//! Built only with `--features bench`: `cargo build --release --features bench --example hello`.
//! Run: `target/release/examples/hello 127.0.0.1:8080`.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // The same runtime as `app serve` (src/cli.rs).
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let app = Router::new().route("/", get(|| async { "Hello, World!" }));
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!("hello: listening on {}", listener.local_addr()?);
            axum::serve(listener, app.into_make_service()).await
        })
}
