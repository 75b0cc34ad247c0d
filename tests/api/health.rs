use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestConfig, create_database, spawn_app, spawn_app_with};
use crate::servers;

#[tokio::test]
async fn healthz_answers_200() {
    let app = spawn_app().await;
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn readyz_is_200_when_everything_is_up() {
    let app = spawn_app().await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["postgres"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(body["checks"]["migrations"], "ok");
}

#[tokio::test]
async fn readyz_is_503_naming_pending_migrations() {
    let shared = servers::shared();
    let unmigrated = create_database(&shared.postgres_admin_url, false).await;
    let app = spawn_app_with(TestConfig::with_servers(
        unmigrated,
        shared.redis_url.clone(),
    ))
    .await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "ok");
    assert!(
        body["checks"]["migrations"]
            .as_str()
            .unwrap()
            .starts_with("pending"),
        "{body}"
    );
}

/// A database that accepts TCP but never answers must not hang the probe.
#[tokio::test]
async fn readyz_answers_within_a_second_when_postgres_hangs() {
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let config = TestConfig::with_servers(
        format!("postgres://u:p@127.0.0.1:{port}/db"),
        servers::shared().redis_url.clone(),
    )
    .set("DB_ACQUIRE_TIMEOUT_MS", "5000");
    let app = spawn_app_with(config).await;
    let started = Instant::now();
    let response = app.get("/readyz").await;
    let elapsed = started.elapsed();
    assert_eq!(response.status(), 503);
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["checks"]["postgres"]
            .as_str()
            .unwrap()
            .starts_with("down"),
        "{body}"
    );
    assert_eq!(body["checks"]["redis"], "ok");
    drop(black_hole);
}
