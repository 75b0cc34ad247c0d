use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestConfig, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_posted_task_is_accepted_with_its_location_and_runs_to_done() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    let response = app
        .client
        .post(app.url("/api/tasks"))
        .header("x-request-id", "req-42")
        .json(&json!({"kind": "wordcount", "payload": {"text": "to be or not to be"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    assert_eq!(location, format!("/api/tasks/{id}"));
    assert_eq!(body["state"], "queued");
    assert_eq!(body["request_id"], "req-42");

    let task: Value = app
        .get(&format!("{location}?wait=10"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["result"]["words"], 6);
    assert_eq!(task["result"]["counts"]["be"], 2);
    assert_eq!(task["request_id"], "req-42");
    for field in ["created_at", "started_at", "finished_at", "updated_at"] {
        assert!(task[field].is_string(), "{field} missing: {task}");
    }
    worker.stop().await;
}

#[tokio::test]
async fn tasks_are_listed_newest_first_with_a_limit() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(app.enqueue("sleep", json!({"ms": i})).await.to_string());
    }
    let body: Value = app.get("/api/tasks?limit=2").await.json().await.unwrap();
    let listed: Vec<&str> = body["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[2].as_str(), ids[1].as_str()]);
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test]
async fn bad_task_input_gets_a_precise_4xx_and_writes_nothing() {
    let app = spawn_app_with(TestConfig::new().await.set("MAX_BODY_BYTES", "1024")).await;
    let post = |body: String, content_type: &'static str| {
        app.client
            .post(app.url("/api/tasks"))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let json_type = "application/json";
    let huge = json!({"kind": "wordcount", "payload": {"text": "x".repeat(4096)}}).to_string();
    let cases = [
        ("{\"kind\": ".to_string(), json_type, 400, "malformed_json"),
        (
            r#"{"kind":"wordcount","payload":{"text":"x"}}"#.into(),
            "text/plain",
            415,
            "unsupported_media_type",
        ),
        (huge, json_type, 413, "payload_too_large"),
        (r#"{"payload":{}}"#.into(), json_type, 422, "invalid_body"),
        (
            r#"{"kind":"mine-bitcoin","payload":{}}"#.into(),
            json_type,
            422,
            "unknown_kind",
        ),
        (
            r#"{"kind":"sleep","payload":{"ms":"soon"}}"#.into(),
            json_type,
            422,
            "invalid_payload",
        ),
        (
            r#"{"kind":"wordcount","payload":{"text":"a","extra":1}}"#.into(),
            json_type,
            422,
            "invalid_payload",
        ),
    ];
    for (body, content_type, status, code) in cases {
        let answer = assert_error(post(body, content_type).await.unwrap(), status, code).await;
        if code == "unknown_kind" {
            let message = answer["message"].as_str().unwrap();
            assert!(message.contains("wordcount"), "{answer}");
        }
    }
    assert_eq!(app.task_count().await, 0, "a rejected request wrote a task");
}

#[tokio::test]
async fn task_lookups_reject_bad_ids_and_queries() {
    let app = spawn_app().await;
    let get = |path: String| app.client.get(app.url(&path)).send();
    assert_error(
        get("/api/tasks/not-a-uuid".into()).await.unwrap(),
        400,
        "invalid_path",
    )
    .await;
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        get(format!("/api/tasks/{unknown}")).await.unwrap(),
        404,
        "not_found",
    )
    .await;
    assert_error(
        get(format!("/api/tasks/{unknown}?wait=99")).await.unwrap(),
        400,
        "invalid_query",
    )
    .await;
    assert_error(
        get("/api/tasks?limit=0".into()).await.unwrap(),
        400,
        "invalid_query",
    )
    .await;
    assert_error(
        get("/api/tasks?limit=abc".into()).await.unwrap(),
        400,
        "invalid_query",
    )
    .await;
    assert_error(get("/nowhere".into()).await.unwrap(), 404, "not_found").await;
}

#[tokio::test]
async fn long_poll_returns_when_the_task_finishes_or_the_wait_ends() {
    let app = spawn_app().await;
    let id = app.enqueue("sleep", json!({"ms": 1})).await;
    let started = std::time::Instant::now();
    let task = app.task_with_wait(id, "0.3").await;
    assert_eq!(
        task["state"], "queued",
        "no worker runs, so the wait ends first"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    let worker = app.spawn_worker().await;
    let task = app.task_with_wait(id, "10").await;
    assert_eq!(task["state"], "done");
    worker.stop().await;
}

#[tokio::test]
async fn a_finished_task_is_answered_from_memory_and_an_unfinished_one_from_postgres() {
    let app = spawn_app().await;
    let id = app.enqueue("wordcount", json!({"text": "a b"})).await;
    assert_eq!(app.task(id).await["state"], "queued");
    // Finished behind the app's back: an unfinished task was not kept, so the next read sees the change.
    sqlx::query(
        r#"UPDATE tasks SET state = 'done', result = '{"words": 2}', finished_at = now() WHERE id = $1"#,
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let done = app.task(id).await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["result"]["words"], 2);
    // The row gone (as after a purge): the finished answer is sent from memory, the same bytes.
    let delete = "DELETE FROM tasks WHERE id = $1";
    sqlx::query(delete)
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.task(id).await, done);
    let again = app.get(&format!("/api/tasks/{id}?wait=1")).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["content-type"], "application/json");
    assert_eq!(again.json::<Value>().await.unwrap(), done);
    assert_eq!(
        app.get(&format!("/api/tasks/{id}?wait=99")).await.status(),
        400,
        "the query is checked before the kept answer is sent"
    );
    // A task that was never read as finished is PostgreSQL's to answer.
    let other = app.enqueue("wordcount", json!({"text": "c"})).await;
    sqlx::query(delete)
        .bind(other)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(app.get(&format!("/api/tasks/{other}")).await.status(), 404);
}
