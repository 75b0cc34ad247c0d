//! The operational commands as child processes: `wait`, `healthcheck`, `migrate`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::child::{PG_SECRET, assert_no_secret, json_lines, run, vars_of};
use crate::helpers::{TestConfig, create_database, spawn_app, spawn_app_with};
use crate::servers::{self, free_port};

/// The `waiting for dependencies` / `giving up` log lines of `app wait`, checked to number attempts 1, 2, 3, …
fn wait_attempts(stderr: &str) -> Vec<Value> {
    let attempts: Vec<Value> = json_lines(stderr)
        .into_iter()
        .filter(|l| l["fields"]["attempt"].is_number())
        .map(|l| l["fields"].clone())
        .collect();
    for (i, attempt) in attempts.iter().enumerate() {
        assert_eq!(
            attempt["attempt"].as_u64(),
            Some(i as u64 + 1),
            "attempts are numbered in order: {stderr}"
        );
    }
    attempts
}

#[tokio::test]
async fn wait_gives_up_with_status_1_when_postgres_is_unreachable() {
    let closed = free_port();
    let config = TestConfig::new()
        .await
        .set(
            "DATABASE_URL",
            format!("postgres://postgres:{PG_SECRET}@127.0.0.1:{closed}/app"),
        )
        .set("WAIT_TIMEOUT", "1");
    let finished = run(&config.vars, &["wait"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
    assert!(
        finished.took < Duration::from_secs(3),
        "WAIT_TIMEOUT=1 but it took {:?}",
        finished.took
    );
    let attempts = wait_attempts(&finished.stderr);
    assert!(
        attempts.len() >= 3,
        "backoff retries within the second: {}",
        finished.stderr
    );
    for attempt in &attempts {
        let postgres = attempt["postgres"].as_str().unwrap_or_default();
        assert!(
            postgres.contains(&format!("127.0.0.1:{closed}")),
            "{attempt}"
        );
        assert_eq!(attempt["redis"], "ready", "{attempt}");
    }
    let last = attempts.last().unwrap();
    assert!(
        last["message"].as_str().unwrap().contains("giving up"),
        "{last}"
    );
    assert!(
        finished.stderr.contains("gave up after"),
        "{}",
        finished.stderr
    );
    assert_no_secret(&finished, &[PG_SECRET]);
}

#[tokio::test]
async fn wait_gives_up_with_status_1_when_redis_is_unreachable() {
    let closed = free_port();
    let config = TestConfig::new()
        .await
        .set("REDIS_URL", format!("redis://127.0.0.1:{closed}/0"))
        .set("WAIT_TIMEOUT", "1");
    let finished = run(&config.vars, &["wait"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
    let attempts = wait_attempts(&finished.stderr);
    assert!(attempts.len() >= 3, "{}", finished.stderr);
    for attempt in &attempts {
        assert_eq!(attempt["postgres"], "ready", "{attempt}");
        assert!(
            attempt["redis"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("127.0.0.1:{closed}")),
            "{attempt}"
        );
    }
}

#[tokio::test]
async fn wait_exits_0_when_postgres_and_redis_answer() {
    let config = TestConfig::new().await;
    let finished = run(&config.vars, &["wait"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    let attempts = wait_attempts(&finished.stderr);
    assert_eq!(attempts.len(), 1, "{}", finished.stderr);
    assert_eq!(attempts[0]["message"], "PostgreSQL and Redis are ready");
}

#[tokio::test]
async fn healthcheck_exits_0_for_a_live_server_and_1_otherwise_within_its_budget() {
    let app = spawn_app().await;
    let healthz = app.url("/healthz");
    let no_env = HashMap::new();
    let finished = run(
        &no_env,
        &["healthcheck", "--url", &healthz],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());

    // The default URL comes from LISTEN_ADDR's port.
    let listen = app.address.trim_start_matches("http://").to_string();
    let finished = run(
        &vars_of(&[("LISTEN_ADDR", &listen)]),
        &["healthcheck"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());

    // --metrics: the default URL is /metrics on METRICS_ADDR's port (the worker's only port); /healthz is not
    // served there.
    let metrics = app
        .metrics_address
        .trim_start_matches("http://")
        .to_string();
    let finished = run(
        &vars_of(&[("METRICS_ADDR", &metrics), ("LISTEN_ADDR", "127.0.0.1:1")]),
        &["healthcheck", "--metrics"],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(finished.stdout.contains("/metrics"), "{}", finished.all());
    let finished = run(
        &no_env,
        &[
            "healthcheck",
            "--url",
            &format!("{}/healthz", app.metrics_address),
        ],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());

    // Not 2xx.
    let finished = run(
        &no_env,
        &["healthcheck", "--url", &app.url("/no-such-route")],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());

    // Nobody listening.
    let closed = format!("http://127.0.0.1:{}/healthz", free_port());
    let finished = run(
        &no_env,
        &["healthcheck", "--url", &closed],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
    assert!(
        finished.took < Duration::from_secs(2),
        "{:?}",
        finished.took
    );

    // A black hole: accepts connections and never answers.
    let black_hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = black_hole.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = black_hole.accept().await {
            held.push(stream);
        }
    });
    let finished = run(
        &no_env,
        &[
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ],
        Duration::from_secs(10),
    )
    .await;
    holder.abort();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
    assert!(
        finished.took < Duration::from_millis(3500),
        "the 2 s budget was not kept: {:?}",
        finished.took
    );
    assert!(finished.stderr.contains("no answer"), "{}", finished.stderr);
}

/// Every file of `dir`, relative path → bytes.

#[tokio::test]
async fn migrate_applies_the_migrations_to_an_empty_database() {
    let shared = servers::shared();
    let empty = create_database(&shared.postgres_admin_url, false).await;
    let config = TestConfig::with_servers(empty, shared.redis_url.clone());
    let pool = sqlx::PgPool::connect(&config.vars["DATABASE_URL"])
        .await
        .unwrap();
    assert!(
        app::db::migration_state(&pool.clone().into())
            .await
            .unwrap()
            .pending
            > 0,
        "starts empty"
    );

    for round in ["first", "second (idempotent)"] {
        let finished = run(&config.vars, &["migrate"], Duration::from_secs(20)).await;
        assert_eq!(
            finished.status.code(),
            Some(0),
            "{round} run: {}",
            finished.all()
        );
    }
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    let embedded: Vec<i64> = app::db::MIGRATOR.iter().map(|m| m.version).collect();
    assert_eq!(applied, embedded);
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0);

    // And the server on that database is ready.
    let app = spawn_app_with(config).await;
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["checks"]["migrations"],
        "ok"
    );
}

/// Expand/contract: a rollback runs the older version's `migrate` on a schema a newer version extended. It must
/// leave the newer migration alone (the older code ignores the added column); a restore refuses it.
#[tokio::test]
async fn migrate_keeps_migrations_of_a_newer_version_and_refuse_newer_fails_on_them() {
    let app = spawn_app().await;
    let pool = sqlx::PgPool::connect(&app.config.vars["DATABASE_URL"])
        .await
        .unwrap();
    // What a newer version's `migrate` leaves behind: its column and its row in sqlx's table.
    sqlx::query("ALTER TABLE tasks ADD COLUMN added_by_newer_version text")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99991231000000, 'added by a newer version', true, '\\x00'::bytea, 0)",
    )
    .execute(&pool)
    .await
    .unwrap();

    let kept = run(&app.config.vars, &["migrate"], Duration::from_secs(20)).await;
    assert_eq!(kept.status.code(), Some(0), "{}", kept.all());
    let response = app.get("/readyz").await;
    assert_eq!(
        response.status(),
        200,
        "the older code serves on the newer schema"
    );

    let refused = run(
        &app.config.vars,
        &["migrate", "--refuse-newer"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1), "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("missing in the resolved migrations"),
        "{}",
        refused.stderr
    );
}
