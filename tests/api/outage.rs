//! Dependency outages under a running, in-process server and worker: PostgreSQL or Redis stopped and started again
//! (on dedicated servers, never the shared ones). Requests fail fast with 503, `/readyz` names what is down, and
//! the same processes recover by themselves; PostgreSQL stays the source of truth when Redis loses its data.
//!
//! Multi-threaded runtimes: `stop()`/`resume()` block the test's thread while the server keeps serving. They are
//! called from the test's own thread, never from `spawn_blocking`: the servers die with the thread that started
//! them.

use std::time::{Duration, Instant};

use app::tasks::Queue;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    ACQUIRE_TIMEOUT, CLAIM_IDLE, TestApp, TestConfig, create_database, eventually, spawn_app_with,
    spawn_worker,
};
use crate::servers::{self, TestPostgres, TestRedis};

struct Answer {
    status: u16,
    body: Value,
    took: Duration,
}

async fn get(app: &TestApp, path: &str) -> Answer {
    let started = Instant::now();
    let response = app
        .client
        .get(app.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        took: started.elapsed(),
    }
}

async fn post_task(app: &TestApp, kind: &str, payload: Value) -> Answer {
    let started = Instant::now();
    let response = app.post_task(kind, payload).await;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    Answer {
        status,
        body,
        took: started.elapsed(),
    }
}

/// A 503 with the JSON error body, answered well before the request would have waited twice the pool timeout.
fn assert_fast_503(what: &str, answer: &Answer) {
    assert_eq!(answer.status, 503, "{what}: {}", answer.body);
    assert_eq!(answer.body["error"], "service_unavailable", "{what}");
    let limit = ACQUIRE_TIMEOUT + Duration::from_secs(1);
    assert!(
        answer.took < limit,
        "{what} took {:?}, more than the pool timeout + 1 s",
        answer.took
    );
}

/// `/readyz` during an outage: 503 within a second, `down` for `down`, `ok` for `up`.
async fn assert_not_ready(app: &TestApp, down: &str, up: &str) {
    let ready = get(app, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(
        ready.took < Duration::from_secs(1),
        "/readyz took {:?}",
        ready.took
    );
    assert!(
        ready.body["checks"][down]
            .as_str()
            .unwrap_or_default()
            .starts_with("down"),
        "{}",
        ready.body
    );
    assert_eq!(ready.body["checks"][up], "ok", "{}", ready.body);
}

/// The status of an answer, for [`eventually`]: `Ok` when it is `expected`, else what came instead.
fn status_is(expected: u16, answer: Answer) -> Result<Answer, String> {
    if answer.status == expected {
        Ok(answer)
    } else {
        Err(format!("{} {}", answer.status, answer.body))
    }
}

/// An app on a PostgreSQL of its own (to stop and restart) and the shared Redis, with `config`'s other settings.
pub(crate) async fn app_on_its_own_postgres(
    config: impl FnOnce(TestConfig) -> TestConfig,
) -> (TestPostgres, TestApp) {
    let pg = TestPostgres::start();
    let database = create_database(&pg.admin_url(), true).await;
    let servers = TestConfig::with_servers(database, servers::shared().redis_url.clone());
    let app = spawn_app_with(config(servers)).await;
    (pg, app)
}

/// An app on a Redis of its own (to stop and restart) and the shared PostgreSQL.
pub(crate) async fn app_on_its_own_redis() -> (TestRedis, TestApp) {
    let redis = TestRedis::start();
    let database = create_database(&servers::shared().postgres_admin_url, true).await;
    let app = spawn_app_with(TestConfig::with_servers(database, redis.url())).await;
    (redis, app)
}

async fn queue_of(app: &TestApp) -> Queue {
    crate::helpers::queue_of(&app.config).await
}

async fn states(app: &TestApp, ids: &[Uuid]) -> Vec<(String, i32)> {
    sqlx::query_as("SELECT state, attempts FROM tasks WHERE id = ANY($1) ORDER BY id")
        .bind(ids)
        .fetch_all(&app.pool)
        .await
        .expect("read task states")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_gives_fast_503s_and_the_server_recovers_without_restart() {
    let (mut pg, app) = app_on_its_own_postgres(|config| config).await;
    let id = app.enqueue("wordcount", json!({"text": "before"})).await;
    assert_eq!(get(&app, "/readyz").await.status, 200);
    let queue = queue_of(&app).await;
    assert_eq!(queue.depth().await.unwrap(), 1);

    pg.stop();
    let stopped = Instant::now();
    assert_fast_503("GET /api/tasks", &get(&app, "/api/tasks").await);
    assert_fast_503(
        "GET /api/tasks/{id}",
        &get(&app, &format!("/api/tasks/{id}")).await,
    );
    assert_fast_503(
        "GET /api/tasks/{id}?wait=5",
        &get(&app, &format!("/api/tasks/{id}?wait=5")).await,
    );
    let refused = post_task(&app, "wordcount", json!({"text": "during"})).await;
    assert_fast_503("POST /api/tasks", &refused);
    assert_eq!(
        queue.depth().await.unwrap(),
        1,
        "a refused task must not reach the queue"
    );
    assert_not_ready(&app, "postgres", "redis").await;
    let page = get(&app, "/").await;
    assert_eq!(page.status, 200, "the status page shows the outage");
    assert!(page.took < Duration::from_millis(1500), "{:?}", page.took);
    assert!(
        page.body
            .as_str()
            .unwrap_or_default()
            .contains("unavailable")
    );
    assert_eq!(get(&app, "/healthz").await.status, 200, "liveness holds");

    pg.resume();
    let resumed = Instant::now();
    let (_, recovered) = eventually(
        "GET /api/tasks answers 200 again",
        Duration::from_secs(10),
        || async { status_is(200, get(&app, "/api/tasks").await) },
    )
    .await;
    let ready = get(&app, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let task = get(&app, &format!("/api/tasks/{id}")).await;
    assert_eq!(task.status, 200);
    assert_eq!(task.body["state"], "queued", "survived the outage");
    assert_eq!(
        post_task(&app, "wordcount", json!({"text": "after"}))
            .await
            .status,
        202
    );
    println!(
        "PostgreSQL outage: 503s while down ({} ms), first 200 {} ms after the restart, no app restart",
        (resumed - stopped).as_millis(),
        recovered.as_millis()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_refuses_tasks_without_writing_them_and_the_server_recovers() {
    let (mut redis, app) = app_on_its_own_redis().await;
    assert_eq!(get(&app, "/readyz").await.status, 200);

    redis.stop();
    let refused = post_task(&app, "wordcount", json!({"text": "during"})).await;
    assert_fast_503("POST /api/tasks", &refused);
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("queue"),
        "{}",
        refused.body
    );
    assert_eq!(
        app.task_count().await,
        0,
        "a task Redis refused leaves no row behind"
    );
    assert_eq!(
        get(&app, "/api/tasks").await.status,
        200,
        "reads need only PostgreSQL"
    );
    assert_not_ready(&app, "redis", "postgres").await;

    redis.resume();
    let (id, recovered) = eventually(
        "POST /api/tasks accepted again",
        Duration::from_secs(10),
        || async {
            let answer = post_task(&app, "wordcount", json!({"text": "after the outage"})).await;
            match answer.status {
                202 => Ok(answer.body["id"].as_str().unwrap().parse::<Uuid>().unwrap()),
                503 => Err(answer.body),
                other => panic!("unexpected {other}: {}", answer.body),
            }
        },
    )
    .await;
    assert_eq!(
        app.task_count().await,
        1,
        "only the accepted task was written"
    );
    assert_eq!(get(&app, "/readyz").await.status, 200);
    let worker = app.spawn_worker().await;
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["result"]["words"], 3, "{task}");
    println!(
        "Redis outage: POST accepted again {} ms after the restart",
        recovered.as_millis()
    );
    worker.stop().await;
    app.stop().await;
}

/// Redis (no persistence here) restarts and loses every queued entry: PostgreSQL is the source of truth, so a
/// worker started afterwards still runs every task, through the reconciler (after 2 × TASK_CLAIM_IDLE_MS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_queued_when_redis_loses_its_data_still_all_run() {
    const TASKS: usize = 20;
    let (mut redis, app) = app_on_its_own_redis().await;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        ids.push(
            app.enqueue("wordcount", json!({"text": format!("task {i}")}))
                .await,
        );
    }
    let queue = queue_of(&app).await;
    assert_eq!(queue.depth().await.unwrap(), TASKS as u64);

    redis.stop();
    redis.resume();
    eventually(
        "Redis answers after the restart",
        Duration::from_secs(5),
        || queue.depth(),
    )
    .await;
    assert_eq!(
        queue.depth().await.unwrap(),
        0,
        "the restart lost the queue"
    );

    let worker = spawn_worker(&app.config).await;
    let all_done = || async {
        let states = states(&app, &ids).await;
        let done = states.iter().filter(|(s, _)| s == "done").count();
        if done == TASKS {
            Ok(states)
        } else {
            Err(format!("{} of {TASKS} not done: {states:?}", TASKS - done))
        }
    };
    let (states, recovered) = eventually(
        "every task done after the Redis restart (none lost)",
        Duration::from_secs(15),
        all_done,
    )
    .await;
    assert!(
        states.iter().all(|(_, attempts)| *attempts == 1),
        "each ran once: {states:?}"
    );
    // The tasks are overdue by the grace (2 × CLAIM_IDLE after they were enqueued, before the worker started) at
    // the latest on the reconciler's second tick, one period (2 × CLAIM_IDLE) after the worker started.
    let expected = CLAIM_IDLE * 2 + Duration::from_millis(1500);
    assert!(
        recovered < expected,
        "recovery took {recovered:?}; the reconciler runs every {:?}, so it should take less than {expected:?}",
        CLAIM_IDLE * 2
    );
    println!(
        "Redis restart with {TASKS} queued tasks: 0 lost, all done {} ms after the worker started \
         (reconciler grace 2 × TASK_CLAIM_IDLE_MS = {} ms)",
        recovered.as_millis(),
        (CLAIM_IDLE * 2).as_millis()
    );
    worker.stop().await;
    app.stop().await;
}

/// A worker running through a Redis restart recovers by itself: the task it was running finishes, and tasks
/// enqueued afterwards are processed without restarting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_keeps_working_after_a_redis_restart() {
    let (mut redis, app) = app_on_its_own_redis().await;
    let worker = app.spawn_worker().await;
    let first = app.enqueue("wordcount", json!({"text": "before"})).await;
    assert_eq!(
        app.wait_finished(first, Duration::from_secs(10)).await["state"],
        "done"
    );
    let ran_on = |id: Uuid| {
        sqlx::query_scalar::<_, Option<String>>("SELECT worker FROM tasks WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
    };
    // The only worker of this test: the one that ran the first task.
    let the_worker = ran_on(first).await.unwrap();
    assert!(the_worker.is_some());
    let running = app.enqueue("sleep", json!({"ms": 1000})).await;
    eventually("the sleep task runs", Duration::from_secs(10), || async {
        let task = app.task(running).await;
        if task["state"] == "running" {
            Ok(())
        } else {
            Err(task)
        }
    })
    .await;

    redis.stop();
    // Long enough for the worker to hit the outage (its blocking read returns within a second).
    eventually(
        "/readyz reports Redis down",
        Duration::from_secs(5),
        || async { status_is(503, get(&app, "/readyz").await) },
    )
    .await;
    redis.resume();
    let resumed = Instant::now();

    let (accepted, _) = eventually(
        "POST /api/tasks accepted again",
        Duration::from_secs(10),
        || async {
            status_is(
                202,
                post_task(&app, "wordcount", json!({"text": "after"})).await,
            )
        },
    )
    .await;
    let ids: Uuid = accepted.body["id"].as_str().unwrap().parse().unwrap();
    let mut after = vec![ids];
    for i in 0..4 {
        after.push(
            app.enqueue("wordcount", json!({"text": format!("after {i}")}))
                .await,
        );
    }
    for id in &after {
        let task = app.wait_finished(*id, Duration::from_secs(10)).await;
        assert_eq!(task["state"], "done", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
        assert_eq!(
            ran_on(*id).await.unwrap(),
            the_worker,
            "run by the same, never restarted worker"
        );
    }
    let recovered = resumed.elapsed();
    let task = app.wait_finished(running, Duration::from_secs(10)).await;
    assert_eq!(
        task["state"], "done",
        "the task running across the restart finished: {task}"
    );
    assert_eq!(task["attempts"], 1, "{task}");
    println!(
        "worker across a Redis restart: new tasks done {} ms after Redis came back",
        recovered.as_millis()
    );
    worker.stop().await;
    app.stop().await;
}
