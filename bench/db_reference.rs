//! The benchmark's reference for a database route: `GET /api/tasks?limit=N` as `app serve` answers it (the same
//! query, the same JSON bytes), tuned the way the fastest TechEmpower entries are. One thread per core, each with
//! its own single-threaded runtime, its own listening socket on the shared port (SO_REUSEPORT: the kernel spreads
//! the connections) and its own PostgreSQL connection with the statement prepared once: no pool, no checkout, no
//! lock between requests. A yardstick for the app's row, not a product path.
//!
//! Built only with `--features bench`: `cargo build --release --features bench --example db_reference`.
//! Run: `target/release/examples/db_reference 127.0.0.1:8080 'host=127.0.0.1 port=5432 user=postgres dbname=app'`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, Statement};
use uuid::Uuid;

/// The app's query (`TaskStore::recent`).
const RECENT: &str = "SELECT id, kind, payload, state, attempts, max_attempts, result, error, request_id, run_at, \
                      created_at, updated_at, started_at, finished_at \
                      FROM tasks ORDER BY created_at DESC, id LIMIT $1";

/// A task as the API shows it: the fields of the app's `TaskRecord`, in its order.
#[derive(Serialize)]
struct Task {
    id: Uuid,
    kind: String,
    payload: Jsonb,
    state: String,
    attempts: i32,
    max_attempts: i32,
    result: Option<Jsonb>,
    error: Option<String>,
    request_id: Option<String>,
    run_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

/// A `jsonb` value as PostgreSQL wrote it (its binary format is a version byte, then the text): checked, not
/// decoded into a tree, as the app passes it through.
#[derive(Serialize)]
#[serde(transparent)]
struct Jsonb(Box<RawValue>);

impl<'a> FromSql<'a> for Jsonb {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = raw
            .strip_prefix(&[1])
            .ok_or("jsonb: an unknown format version")?;
        Ok(Self(serde_json::from_slice(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }
}

#[derive(Serialize)]
struct Tasks {
    tasks: Vec<Task>,
}

#[derive(Deserialize)]
struct Params {
    limit: Option<i64>,
}

/// One thread's connection and prepared statement.
struct Db {
    client: Client,
    recent: Statement,
}

async fn list(State(db): State<Arc<Db>>, Query(params): Query<Params>) -> Response {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return (StatusCode::BAD_REQUEST, "limit must be between 1 and 100").into_response();
    }
    let rows = match db.client.query(&db.recent, &[&limit]).await {
        Ok(rows) => rows,
        Err(err) => return (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response(),
    };
    let tasks = rows
        .iter()
        .map(|row| Task {
            id: row.get(0),
            kind: row.get(1),
            payload: row.get(2),
            state: row.get(3),
            attempts: row.get(4),
            max_attempts: row.get(5),
            result: row.get(6),
            error: row.get(7),
            request_id: row.get(8),
            run_at: row.get(9),
            created_at: row.get(10),
            updated_at: row.get(11),
            started_at: row.get(12),
            finished_at: row.get(13),
        })
        .collect();
    match serde_json::to_vec(&Tasks { tasks }) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
    }
}

/// One core's server: its runtime, connection and listening socket.
fn serve_on_this_thread(addr: SocketAddr, database: &str) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (client, connection) = tokio_postgres::connect(database, NoTls)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                eprintln!("db_reference: PostgreSQL connection: {err}");
            }
        });
        let recent = client
            .prepare(RECENT)
            .await
            .map_err(std::io::Error::other)?;
        let app = Router::new()
            .route("/api/tasks", get(list))
            .route("/", get(|| async { "ok" }))
            .with_state(Arc::new(Db { client, recent }));
        axum::serve(reuse_port_listener(addr)?, app.into_make_service()).await
    })
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    tokio::net::TcpListener::from_std(socket.into())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let database = args
        .next()
        .unwrap_or_else(|| "host=127.0.0.1 user=postgres".into());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "db_reference: listening on {addr}, {threads} threads, one PostgreSQL connection each"
    );
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let database = database.clone();
            std::thread::spawn(move || serve_on_this_thread(addr, &database))
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| std::io::Error::other("a server thread panicked"))??;
    }
    Ok(())
}
