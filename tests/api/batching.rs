//! Enqueues written together (group commit) and deliveries started together: every caller still gets its own
//! answer, every accepted task is committed and delivered once, and a failure of either store fails every task of
//! the batch without leaving anything behind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::StreamRangeReply;
use serde_json::{Value, json};
use uuid::Uuid;

use app::tasks::records::NewTask;
use app::tasks::{Lifecycle, TaskSpec, TaskStore};

use crate::helpers::{CLAIM_IDLE, TestApp, eventually, queue_of, redis_connection, spawn_app};
use crate::outage::{app_on_its_own_postgres, app_on_its_own_redis};

/// `n` POSTs sent at once; the status and body of each, in the order sent.
async fn post_concurrently(
    app: &TestApp,
    n: usize,
    text: impl Fn(usize) -> String,
) -> Vec<(u16, Value)> {
    let requests = (0..n).map(|i| {
        let request = app
            .client
            .post(app.url("/api/tasks"))
            .json(&json!({"kind": "wordcount", "payload": {"text": text(i)}}))
            .send();
        async move {
            let response = request.await.expect("request sent");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json body"))
        }
    });
    futures_join_all(requests).await
}

/// `join_all` without a futures dependency: every future on its own task, answers in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("request task"));
    }
    out
}

/// The stream's entries as (entry id, task id).
async fn stream_entries(app: &TestApp) -> Vec<(String, Uuid)> {
    let stream = format!("{}:stream", app.config.vars["QUEUE_NAME"]);
    let reply: StreamRangeReply = redis_connection(&app.config)
        .await
        .xrange_all(&stream)
        .await
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let task: String = e.get("task").expect("a task field");
            (e.id, task.parse().expect("a task id"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_are_each_committed_and_delivered_exactly_once() {
    const TASKS: usize = 200;
    let app = spawn_app().await;
    let answers = post_concurrently(&app, TASKS, |i| format!("task number {i}")).await;
    let mut accepted = HashMap::new();
    for (i, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 202, "{body}");
        assert_eq!(body["state"], "queued", "{body}");
        assert_eq!(
            body["payload"]["text"],
            format!("task number {i}"),
            "each caller gets its own record"
        );
        let id: Uuid = body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        assert!(accepted.insert(id, i).is_none(), "an id answered twice");
    }

    // Every answered task is a committed row, and the stream carries each exactly once.
    let rows: Vec<(Uuid, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT id, state, created_at FROM tasks")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), TASKS);
    assert!(
        rows.iter()
            .all(|(id, state, _)| accepted.contains_key(id) && state == "queued")
    );
    let entries = stream_entries(&app).await;
    let carried: HashSet<Uuid> = entries.iter().map(|(_, task)| *task).collect();
    assert_eq!(entries.len(), TASKS, "one entry per task");
    assert_eq!(carried, accepted.keys().copied().collect::<HashSet<_>>());
    // Group commit: the tasks of one batch share their transaction's now().
    let commits: HashSet<_> = rows.iter().map(|(_, _, created)| *created).collect();
    assert!(
        commits.len() < TASKS,
        "{} tasks in {} commits: nothing was batched",
        TASKS,
        commits.len()
    );
    println!(
        "{TASKS} concurrent POSTs written in {} commits",
        commits.len()
    );

    // The entry of each task is noted for the reconciler (after the answers).
    let entry_of: HashMap<Uuid, String> = entries
        .into_iter()
        .map(|(entry, task)| (task, entry))
        .collect();
    eventually(
        "every stream entry noted",
        Duration::from_secs(10),
        || async {
            let noted: Vec<(Uuid, Option<String>)> =
                sqlx::query_as("SELECT id, stream_id FROM tasks")
                    .fetch_all(&app.pool)
                    .await
                    .map_err(|e| e.to_string())?;
            let wrong = noted
                .iter()
                .filter(|(id, entry)| entry.as_ref() != entry_of.get(id))
                .count();
            if wrong == 0 {
                Ok(())
            } else {
                Err(format!("{wrong} not noted yet"))
            }
        },
    )
    .await;

    let worker = app.spawn_worker().await;
    eventually(
        "every task done, each in one attempt",
        Duration::from_secs(30),
        || async {
            let states: Vec<(String, i32)> = sqlx::query_as("SELECT state, attempts FROM tasks")
                .fetch_all(&app.pool)
                .await
                .map_err(|e| e.to_string())?;
            let done = states.iter().filter(|(s, _)| s == "done").count();
            if done < TASKS {
                return Err(format!("{done} of {TASKS} done"));
            }
            assert!(
                states.iter().all(|(_, attempts)| *attempts == 1),
                "a task ran twice: {states:?}"
            );
            Ok(())
        },
    )
    .await;
    worker.stop().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refusing_a_batch_fails_every_caller_and_leaves_no_row() {
    let (mut redis, app) = app_on_its_own_redis().await;
    redis.stop();
    let answers = post_concurrently(&app, 40, |i| format!("refused {i}")).await;
    for (status, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["error"], "service_unavailable", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("queue"),
            "{body}"
        );
    }
    assert_eq!(
        app.task_count().await,
        0,
        "a task Redis refused left a row behind"
    );
    redis.resume();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_failing_a_batch_fails_every_caller_and_queues_nothing() {
    let (mut pg, app) = app_on_its_own_postgres(|config| config).await;
    pg.stop();
    let answers = post_concurrently(&app, 40, |i| format!("refused {i}")).await;
    for (status, body) in &answers {
        assert_eq!(*status, 503, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("database"),
            "{body}"
        );
    }
    assert_eq!(
        queue_of(&app.config).await.depth().await.unwrap(),
        0,
        "a refused task reached the queue"
    );
    pg.resume();
    app.stop().await;
}

/// A row PostgreSQL refuses fails alone, not the batch it was in. Through the API such a row cannot be made any
/// more (a NUL in the text, which jsonb cannot hold, is a 422 now), so the batch is written directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_row_does_not_fail_the_rest_of_its_batch() {
    const TASKS: usize = 60;
    let app = spawn_app().await;
    let refused = app
        .post_task("wordcount", json!({"text": "nul \u{0} inside"}))
        .await;
    assert_eq!(refused.status(), 422);
    assert_eq!(
        refused.json::<Value>().await.unwrap()["error"],
        "invalid_payload"
    );

    let bad = |i: usize| i % 20 == 7;
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| NewTask {
            id: Uuid::new_v4(),
            spec: TaskSpec::WordCount {
                text: if bad(i) {
                    "nul \u{0} inside".into()
                } else {
                    format!("fine {i}")
                },
            },
            max_attempts: 3,
            request_id: None,
            idempotency: None,
        })
        .collect();
    let store = TaskStore::new(app.pool.clone().into());
    let queue = queue_of(&app.config).await;
    let written = Lifecycle::new(&store, &queue).enqueue_many(&tasks).await;
    for (i, result) in written.results.iter().enumerate() {
        assert_eq!(result.is_ok(), !bad(i), "task {i}: {result:?}");
    }
    let good = (0..TASKS).filter(|i| !bad(*i)).count();
    assert_eq!(app.task_count().await, good as i64);
    assert_eq!(
        stream_entries(&app).await.len(),
        good,
        "only the accepted tasks are queued"
    );
    app.stop().await;
}

/// A task carried by two entries read in one batch (the reconciler resent it) runs once: the second delivery
/// finds it running, stays pending, and is dropped once it is taken over and the task is found finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_delivered_twice_in_one_read_runs_once() {
    let app = spawn_app().await;
    let id = app.enqueue("sleep", json!({"ms": 200})).await;
    let queue = queue_of(&app.config).await;
    queue.enqueue(id).await.expect("a second entry");
    assert_eq!(stream_entries(&app).await.len(), 2);

    let worker = app.spawn_worker().await;
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["attempts"], 1, "started twice: {task}");
    eventually("both entries retired", CLAIM_IDLE * 6, || async {
        match queue.depth().await {
            Ok(0) => Ok(()),
            Ok(n) => Err(format!("{n} entries left")),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(
        app.task(id).await["attempts"],
        1,
        "the second entry ran it again"
    );
    worker.stop().await;
    app.stop().await;
}
