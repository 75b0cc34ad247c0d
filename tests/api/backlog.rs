//! `QUEUE_MAX_BACKLOG`: at the bound, new tasks are refused with 503 `queue_full` and `Retry-After`, by the API and
//! the page's form alike; nothing accepted before is lost, and below the bound again tasks are accepted.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::csrf_cookie::{form_token, post_form};
use crate::helpers::{TestApp, TestConfig, eventually, spawn_app_with};

async fn assert_queue_full(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["error"], "queue_full", "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Writes a task row as another replica would (this process's view does not count it in).
async fn insert_elsewhere(app: &TestApp, state: &str) -> Uuid {
    let id = Uuid::new_v4();
    sqlx::query(
        r#"INSERT INTO tasks (id, kind, payload, max_attempts, state)
           VALUES ($1, 'sleep', '{"ms": 1}', 3, $2)"#,
    )
    .bind(id)
    .bind(state)
    .execute(&app.pool)
    .await
    .expect("insert a task");
    id
}

#[tokio::test]
async fn a_full_queue_refuses_with_503_and_retry_after_loses_nothing_and_accepts_again_once_drained()
 {
    let app = spawn_app_with(TestConfig::new().await.set("QUEUE_MAX_BACKLOG", "3")).await;
    let (_, token) = form_token(&app, false).await;
    let mut accepted = Vec::new();
    for _ in 0..3 {
        accepted.push(app.enqueue("sleep", json!({"ms": 1})).await);
    }

    assert_queue_full(app.post_task("sleep", json!({"ms": 1})).await).await;
    assert_queue_full(post_form(&app, false, &format!("csrftoken={token}"), &token).await).await;
    let refused_bad = app.post_task("sleep", json!({"ms": -1})).await;
    assert_eq!(refused_bad.status(), 422, "validation comes first");
    assert_eq!(app.task_count().await, 3, "a refused task was written");

    let worker = app.spawn_worker().await;
    for id in &accepted {
        let task = app.wait_finished(*id, Duration::from_secs(10)).await;
        assert_eq!(task["state"], "done", "{task}");
    }
    let (again, _) = eventually(
        "a task accepted below the bound",
        Duration::from_secs(5),
        || async {
            let response = app.post_task("sleep", json!({"ms": 1})).await;
            match response.status().as_u16() {
                202 => Ok(response.json::<Value>().await.expect("json")),
                status => Err(status),
            }
        },
    )
    .await;
    let again: Uuid = again["id"].as_str().unwrap().parse().unwrap();
    let task = app.wait_finished(again, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    worker.stop().await;
}

/// The view is PostgreSQL's count, not only this process's own enqueues: tasks another replica queued are seen,
/// every unfinished state counts, finished ones do not.
#[tokio::test]
async fn unfinished_tasks_queued_elsewhere_count_and_finished_ones_do_not() {
    let app = spawn_app_with(TestConfig::new().await.set("QUEUE_MAX_BACKLOG", "3")).await;
    for state in ["done", "dead", "done", "dead"] {
        insert_elsewhere(&app, state).await;
    }
    let queued = insert_elsewhere(&app, "queued").await;
    insert_elsewhere(&app, "running").await;
    insert_elsewhere(&app, "retrying").await;

    assert_queue_full(app.post_task("sleep", json!({"ms": 1})).await).await;

    sqlx::query("UPDATE tasks SET state = 'done' WHERE id = $1")
        .bind(queued)
        .execute(&app.pool)
        .await
        .unwrap();
    let (_, took) = eventually(
        "a task accepted once one finished",
        Duration::from_secs(5),
        || async {
            match app
                .post_task("sleep", json!({"ms": 1}))
                .await
                .status()
                .as_u16()
            {
                202 => Ok(()),
                status => Err(status),
            }
        },
    )
    .await;
    assert!(took < Duration::from_secs(2), "seen after {took:?}");
    assert_queue_full(app.post_task("sleep", json!({"ms": 1})).await).await;
}

/// `QUEUE_MAX_BACKLOG=0`: no bound, even past the default's 10,000.
#[tokio::test]
async fn with_no_bound_nothing_is_refused() {
    let app = spawn_app_with(TestConfig::new().await.set("QUEUE_MAX_BACKLOG", "0")).await;
    sqlx::query(
        r#"INSERT INTO tasks (id, kind, payload, max_attempts)
           SELECT gen_random_uuid(), 'sleep', '{"ms": 1}', 3 FROM generate_series(1, 10000)"#,
    )
    .execute(&app.pool)
    .await
    .unwrap();
    for _ in 0..3 {
        app.enqueue("sleep", json!({"ms": 1})).await;
    }
    assert_eq!(app.task_count().await, 10_003);
}
