//! The worker across a PostgreSQL restart: its intake and the recorder of its successes each keep a connection
//! (`db::KeptConnection`); the restart breaks both, the first query on each fails, and the next takes a new
//! connection. Tasks queued after the restart run at once, not after a takeover (`TASK_CLAIM_IDLE_MS`). The API's
//! reads answer through the restart.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{eventually, spawn_worker};
use crate::outage::app_on_its_own_postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_running_tasks_after_a_postgres_restart() {
    let (mut pg, app) =
        app_on_its_own_postgres(|config| config.set("TASK_CLAIM_IDLE_MS", "60000")).await;
    let worker = spawn_worker(&app.config).await;
    let before = app.enqueue("wordcount", json!({"text": "before"})).await;
    app.wait_finished(before, Duration::from_secs(10)).await;

    pg.stop();
    pg.resume();
    // The app's enqueue may meet a broken connection too: post until one is accepted.
    let (after, _) = eventually(
        "a task accepted after the restart",
        Duration::from_secs(10),
        || async {
            let response = app.post_task("wordcount", json!({"text": "after"})).await;
            match response.status().as_u16() {
                202 => Ok(response.json::<serde_json::Value>().await.unwrap()),
                status => Err(status),
            }
        },
    )
    .await;
    let id = after["id"].as_str().unwrap().parse().unwrap();
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    worker.stop().await;
}

/// The API's reads run on reader connections kept apart from the pool (`db::Db::read`), which no ping tests before
/// use. A restart breaks each of them; the read that meets a broken one runs again on a new connection, so the first
/// requests after the restart are answered, not 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reads_answer_the_first_requests_after_a_postgres_restart() {
    let (mut pg, app) = app_on_its_own_postgres(|config| config.set("DB_READERS", "2")).await;
    let id = app.enqueue("wordcount", json!({"text": "kept"})).await;
    // Sequential reads take the readers in turn: both connect.
    for path in ["/api/tasks?limit=5".to_string(), format!("/api/tasks/{id}")] {
        assert_eq!(
            app.get(&path).await.status(),
            200,
            "{path} before the restart"
        );
    }

    pg.stop();
    pg.resume();
    for path in ["/api/tasks?limit=5".to_string(), format!("/api/tasks/{id}")] {
        let response = app.get(&path).await;
        let status = response.status();
        assert_eq!(
            status,
            200,
            "{path} after the restart: {}",
            response.text().await.unwrap()
        );
    }
}
