//! `Idempotency-Key` on `POST /api/tasks` and on the status page's form: a request sent again with its key gets
//! the first request's task and never queues a second; the key reused for another request is refused; keys expire.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, redis_connection, spawn_app};

async fn post_keyed(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/tasks"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn stream_length(app: &TestApp) -> usize {
    let mut redis = redis_connection(&app.config).await;
    let name = &app.config.settings().tasks.name;
    redis::cmd("XLEN")
        .arg(format!("{name}:stream"))
        .query_async(&mut redis)
        .await
        .expect("XLEN")
}

#[tokio::test]
async fn the_same_key_and_request_return_the_first_task_and_queue_nothing_more() {
    let app = spawn_app().await;
    let body = json!({"kind": "wordcount", "payload": {"text": "once only"}});
    let first = post_keyed(&app, "order-17", &body).await;
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.expect("json");

    // The same request in other bytes: the fields in another order, other whitespace.
    let again = app
        .client
        .post(app.url("/api/tasks"))
        .header("idempotency-key", "order-17")
        .header("content-type", "application/json")
        .body(r#"{ "payload": {"text": "once only"},  "kind": "wordcount" }"#)
        .send()
        .await
        .expect("request sent");
    assert_eq!(again.status(), 202);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(
        again.headers()["location"],
        format!("/api/tasks/{}", first["id"].as_str().expect("id"))
    );
    let again: Value = again.json().await.expect("json");
    assert_eq!(again["id"], first["id"]);
    assert_eq!(app.task_count().await, 1);
    assert_eq!(
        stream_length(&app).await,
        1,
        "a repeat added a stream entry"
    );

    // Without a key, or with another key, the same body is a new task.
    assert_eq!(
        app.post_task("wordcount", json!({"text": "once only"}))
            .await
            .status(),
        202
    );
    assert_eq!(post_keyed(&app, "order-18", &body).await.status(), 202);
    assert_eq!(app.task_count().await, 3);
    app.stop().await;
}

#[tokio::test]
async fn the_key_of_another_request_is_refused_with_422_and_writes_nothing() {
    let app = spawn_app().await;
    let body = json!({"kind": "wordcount", "payload": {"text": "a"}});
    assert_eq!(post_keyed(&app, "k-1", &body).await.status(), 202);
    let other = json!({"kind": "wordcount", "payload": {"text": "b"}});
    let refused = post_keyed(&app, "k-1", &other).await;
    assert_eq!(refused.status(), 422);
    let refused: Value = refused.json().await.expect("json");
    assert_eq!(refused["error"], "idempotency_key_reused");
    assert_eq!(app.task_count().await, 1);
    assert_eq!(stream_length(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_malformed_key_is_a_400_before_anything_is_written() {
    let app = spawn_app().await;
    let body = json!({"kind": "wordcount", "payload": {"text": "a"}});
    for key in ["", &"k".repeat(256)] {
        let response = post_keyed(&app, key, &body).await;
        assert_eq!(response.status(), 400, "key {key:?}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["error"], "invalid_idempotency_key");
    }
    assert_eq!(app.task_count().await, 0);
    app.stop().await;
}

/// Concurrent requests with one key, written in one batch or in batches in flight at once: one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_repeats_queue_one_task() {
    let app = spawn_app().await;
    let body = json!({"kind": "wordcount", "payload": {"text": "race"}});
    let mut sends = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let request = app
            .client
            .post(app.url("/api/tasks"))
            .header("idempotency-key", "race-1")
            .json(&body);
        sends.spawn(async move {
            let answer = request.send().await.expect("request sent");
            assert_eq!(answer.status(), 202);
            let task: Value = answer.json().await.expect("json");
            task["id"].as_str().expect("id").to_owned()
        });
    }
    let mut ids = sends.join_all().await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one task for one key: {ids:?}");
    assert_eq!(app.task_count().await, 1);
    assert_eq!(stream_length(&app).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn expired_keys_are_purged_and_then_name_nothing() {
    let app = spawn_app().await;
    let body = json!({"kind": "wordcount", "payload": {"text": "old"}});
    assert_eq!(post_keyed(&app, "old-key", &body).await.status(), 202);
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.pool)
        .await
        .expect("age the key");
    let store = app::tasks::TaskStore::new(app.pool.clone().into());
    let purged = store
        .purge_idempotency_keys(Duration::from_secs(24 * 3600))
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    let fresh = post_keyed(&app, "old-key", &body).await;
    assert_eq!(fresh.status(), 202);
    assert!(fresh.headers().get("idempotent-replayed").is_none());
    assert_eq!(app.task_count().await, 2);
    app.stop().await;
}

/// The status page's form carries a fresh key per view: a double submit queues one task.
#[tokio::test]
async fn a_double_submitted_form_queues_one_task() {
    let app = spawn_app().await;
    let page = app.get("/").await;
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    let cookie = cookie.split(';').next().expect("pair").to_owned();
    let html = page.text().await.expect("html");
    let field = |name: &str| {
        let marker = format!("name=\"{name}\" value=\"");
        let start = html.find(&marker).expect("field") + marker.len();
        html[start..].split('"').next().expect("value").to_owned()
    };
    let (token, key) = (field("csrf_token"), field("idempotency_key"));
    Uuid::parse_str(&key).expect("the form's key is a UUID");
    for _ in 0..2 {
        let sent = app
            .client
            .post(app.url("/tasks"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf_token", token.as_str()),
                ("idempotency_key", key.as_str()),
                ("kind", "wordcount"),
                ("text", "double click"),
            ])
            .send()
            .await
            .expect("form sent");
        assert_eq!(sent.status(), 303);
    }
    assert_eq!(app.task_count().await, 1);
    let next_view = app.get("/").await.text().await.expect("html");
    assert!(!next_view.contains(&key), "each view has its own key");
    app.stop().await;
}
