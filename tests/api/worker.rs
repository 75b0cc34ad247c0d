use std::time::Duration;

use serde_json::json;

use redis::AsyncCommands;

use crate::helpers::{
    TestConfig, eventually, queue_of, redis_connection, spawn_app, spawn_app_with, spawn_worker,
};

#[tokio::test]
async fn a_failing_task_is_retried_with_backoff_then_dead_with_its_error() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    let id = app.enqueue("fail", json!({})).await;
    let task = app.wait_finished(id, Duration::from_secs(15)).await;
    assert_eq!(task["state"], "dead", "{task}");
    assert_eq!(task["attempts"], 3, "TASK_MAX_ATTEMPTS is 3 in tests");
    assert!(
        task["error"].as_str().unwrap().contains("always fails"),
        "{task}"
    );
    assert!(task["result"].is_null());
    // Backoff: 100 ms then 200 ms between the three attempts.
    let created =
        chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str().unwrap()).unwrap();
    let finished =
        chrono::DateTime::parse_from_rfc3339(task["finished_at"].as_str().unwrap()).unwrap();
    assert!(
        finished - created >= chrono::Duration::milliseconds(300),
        "{task}"
    );

    let queue = queue_of(&app.config).await;
    let dead: Vec<String> = redis_connection(&app.config)
        .await
        .lrange(format!("{}:dead", app.config.vars["QUEUE_NAME"]), 0, 9)
        .await
        .unwrap();
    assert_eq!(dead, vec![id.to_string()]);
    assert_eq!(queue.depth().await.unwrap(), 0, "nothing left queued");
    worker.stop().await;
}

#[tokio::test]
async fn a_task_over_its_timeout_fails_like_an_error() {
    let app = spawn_app_with(
        TestConfig::new()
            .await
            .set("TASK_TIMEOUT", "0.2")
            .set("TASK_MAX_ATTEMPTS", "2"),
    )
    .await;
    let worker = app.spawn_worker().await;
    let id = app.enqueue("sleep", json!({"ms": 5000})).await;
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "dead");
    assert!(
        task["error"].as_str().unwrap().contains("timed out"),
        "{task}"
    );
    worker.stop().await;
}

/// Several workers on one queue: every task runs exactly once (one attempt each), none is lost.
#[tokio::test]
async fn several_workers_share_the_queue_without_running_a_task_twice() {
    let app = spawn_app().await;
    let workers = [
        app.spawn_worker().await,
        app.spawn_worker().await,
        app.spawn_worker().await,
    ];
    let mut ids = Vec::new();
    for i in 0..40 {
        ids.push(app.enqueue("sleep", json!({"ms": 20 + i % 5})).await);
    }
    for id in &ids {
        let task = app.wait_finished(*id, Duration::from_secs(20)).await;
        assert_eq!(task["state"], "done");
        assert_eq!(task["attempts"], 1, "a task started twice: {task}");
    }
    let runners: i64 = sqlx::query_scalar("SELECT count(DISTINCT worker) FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        runners >= 2,
        "work was not shared: {runners} worker(s) ran everything"
    );
    for worker in workers {
        worker.stop().await;
    }
}

/// The lock that lets one worker run each periodic job per period: while one worker holds a period, another is
/// refused; once the period is over, the other gets it.
#[tokio::test]
async fn a_period_lock_goes_to_one_worker_until_the_period_ends() {
    let app = spawn_app().await;
    let queue = queue_of(&app.config).await;
    let period = Duration::from_millis(300);
    let taken = std::time::Instant::now();
    assert!(queue.try_lock_period("job", "w1", period).await.unwrap());
    assert!(!queue.try_lock_period("job", "w2", period).await.unwrap());
    let lock_for_w2 = || async {
        match queue.try_lock_period("job", "w2", period).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("still held by w1".to_string()),
            Err(err) => Err(err.to_string()),
        }
    };
    eventually("w2 takes the next period", period * 3, lock_for_w2).await;
    assert!(
        taken.elapsed() >= period,
        "w1's period ended early: {:?}",
        taken.elapsed()
    );
}

#[tokio::test]
async fn the_worker_purges_old_finished_tasks_and_writes_its_heartbeat() {
    let app = spawn_app_with(TestConfig::new().await.set("TASK_RETENTION_HOURS", "1")).await;
    sqlx::query(
        "INSERT INTO tasks (id, kind, payload, state, max_attempts, finished_at)
         VALUES (gen_random_uuid(), 'wordcount', '{}', 'done', 3, now() - interval '2 hours'),
                (gen_random_uuid(), 'wordcount', '{}', 'done', 3, now() - interval '10 minutes')",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let worker = spawn_worker(&app.config).await;
    eventually("the old task purged", Duration::from_secs(10), || async {
        match app.task_count().await {
            1 => Ok(()),
            n => Err(format!("{n} tasks")),
        }
    })
    .await;
    let queue = queue_of(&app.config).await;
    let (last_beat, _) = queue.status().await.unwrap();
    let beat = last_beat.expect("a heartbeat");
    assert!(app::tasks::queue::now_ms() - beat < 5_000);
    worker.stop().await;
}

#[tokio::test]
async fn a_stopped_worker_stops_taking_work() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    worker.stop().await;
    let id = app.enqueue("wordcount", json!({"text": "later"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.task(id).await["state"], "queued");
    let next = app.spawn_worker().await;
    assert_eq!(
        app.wait_finished(id, Duration::from_secs(10)).await["state"],
        "done"
    );
    next.stop().await;
}

#[tokio::test]
async fn tasks_enqueued_before_any_worker_existed_are_delivered() {
    let app = spawn_app().await;
    let ids = [
        app.enqueue("wordcount", json!({"text": "a"})).await,
        app.enqueue("wordcount", json!({"text": "b"})).await,
    ];
    let worker = app.spawn_worker().await;
    for id in ids {
        assert_eq!(
            app.wait_finished(id, Duration::from_secs(10)).await["state"],
            "done"
        );
    }
    worker.stop().await;
}

/// `WORKER_CONCURRENCY` tasks run at once, no more: a worker reads and starts up to twice as many (their leases
/// taken, like Celery's prefetch), but each runs only in a free slot; the slot is given back when the attempt ends
/// (the outcome is recorded after, in a batch).
#[tokio::test]
async fn no_more_than_worker_concurrency_tasks_run_at_once() {
    const SLEEP_MS: f64 = 300.0;
    let app = spawn_app_with(TestConfig::new().await.set("WORKER_CONCURRENCY", "2")).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(app.enqueue("sleep", json!({"ms": SLEEP_MS as u64})).await);
    }
    let worker = spawn_worker(&app.config).await;
    for id in &ids {
        let task = app.wait_finished(*id, Duration::from_secs(20)).await;
        assert_eq!(task["state"], "done", "{task}");
    }
    worker.stop().await;
    // started_at is when the lease was taken, not when the task began to run; finished_at is when its outcome was
    // recorded, a little after it stopped. So each run is taken as the first half of the SLEEP_MS before
    // finished_at (recording may lag by up to half of it), and those spans are counted where they overlap.
    let ends: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM finished_at)::float8 * 1000 FROM tasks ORDER BY finished_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let runs: Vec<(f64, f64)> = ends
        .iter()
        .map(|end| (end - SLEEP_MS, end - SLEEP_MS / 2.0))
        .collect();
    let at_once = runs
        .iter()
        .map(|&(start, _)| {
            runs.iter()
                .filter(|&&(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert_eq!(
        at_once, 2,
        "tasks running at once; their ends (ms): {ends:?}"
    );
}
