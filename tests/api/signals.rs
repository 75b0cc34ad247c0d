//! `app tasks` and `app serve` as child processes under SIGKILL and SIGTERM.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::child::{AppProcess, child_vars};
use crate::helpers::{
    CLAIM_IDLE, TestApp, TestConfig, eventually, redis_connection, spawn_app, spawn_app_with,
    spawn_worker,
};

/// Polls the task until `done(task)` holds, while `worker` runs.
async fn wait_for_task(
    app: &TestApp,
    id: Uuid,
    what: &str,
    within: Duration,
    worker: &mut AppProcess,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("task {id} {what}");
    worker
        .eventually(&what, within, || async {
            let task = app.task(id).await;
            if done(&task) { Ok(task) } else { Err(task) }
        })
        .await
}

/// A `sleep` task of `ms` and an `app tasks` child that has started it; also the task as it runs.
async fn worker_running_a_sleep(app: &TestApp, ms: u64) -> (Uuid, AppProcess, Value) {
    let id = app.enqueue("sleep", json!({ "ms": ms })).await;
    let mut worker = AppProcess::spawn(&child_vars(&app.config.vars), &["tasks"]);
    let running = wait_for_task(
        app,
        id,
        "running",
        Duration::from_secs(10),
        &mut worker,
        |t| t["state"] == "running",
    )
    .await;
    (id, worker, running)
}

/// kill -9 mid-task loses nothing: another worker takes the task over once the dead worker's claim has been idle
/// for `TASK_CLAIM_IDLE_MS`, and it ends `done` on its second attempt (attempts are counted when they start).
#[tokio::test]
async fn a_worker_killed_with_sigkill_mid_task_loses_nothing() {
    let app = spawn_app().await;
    let (id, mut first, running) = worker_running_a_sleep(&app, 2000).await;
    assert_eq!(running["attempts"], 1, "{running}");

    first.signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let status = first.exit_within(Duration::from_secs(5)).await;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    let orphan = app.task(id).await;
    assert_eq!(
        orphan["state"], "running",
        "nothing may have finished it: {orphan}"
    );

    let mut second = AppProcess::spawn(&child_vars(&app.config.vars), &["tasks"]);
    // Bounded by the visibility timeout: the claim must go idle for CLAIM_IDLE, then the next claim scan
    // (every CLAIM_IDLE/4) takes it. The reconciler, the slower fallback, would need more than 2 × CLAIM_IDLE.
    let limit = CLAIM_IDLE * 2 + Duration::from_millis(500);
    wait_for_task(
        &app,
        id,
        "taken over after the SIGKILL",
        limit.saturating_sub(killed_at.elapsed()),
        &mut second,
        |t| t["attempts"].as_i64() >= Some(2),
    )
    .await;
    let pickup = killed_at.elapsed();
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["attempts"], 2, "{task}");
    assert_eq!(task["result"]["slept_ms"], 2000, "{task}");
    println!(
        "SIGKILL mid-task: taken over by a new worker {} ms after the kill (TASK_CLAIM_IDLE_MS={})",
        pickup.as_millis(),
        CLAIM_IDLE.as_millis()
    );
    second.terminate().await;
}

/// SIGTERM with a shutdown timeout longer than the running task: intake stops at once (a task queued after the
/// signal is not started), the running task finishes (`done`, one attempt), and the process exits 0 within
/// `SHUTDOWN_TIMEOUT`.
#[tokio::test]
async fn sigterm_lets_a_worker_finish_its_task_within_the_shutdown_timeout() {
    let app = spawn_app_with(TestConfig::new().await.set("SHUTDOWN_TIMEOUT", "6")).await;
    let (id, mut worker, _) = worker_running_a_sleep(&app, 1500).await;

    worker.signal(libc::SIGTERM);
    let signalled = Instant::now();
    worker
        .wait_for_line(&["no new tasks are taken"], Duration::from_secs(2))
        .await;
    let later = app
        .enqueue("wordcount", json!({"text": "after the signal"}))
        .await;
    let status = worker.exit_within(Duration::from_secs(8)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.output());
    assert!(
        took < Duration::from_secs(6),
        "exit took {took:?}, SHUTDOWN_TIMEOUT is 6 s"
    );
    println!(
        "SIGTERM within the shutdown timeout: exit {} ms after the signal, task finished",
        took.as_millis()
    );

    let task = app.task(id).await;
    assert_eq!(task["state"], "done", "finished before the exit: {task}");
    assert_eq!(task["attempts"], 1, "{task}");
    let later_task = app.task(later).await;
    assert_eq!(
        later_task["state"], "queued",
        "a stopping worker must not start new work: {later_task}"
    );
    assert_eq!(later_task["attempts"], 0, "{later_task}");

    // …and it was not lost: the next worker runs it.
    let next = spawn_worker(&app.config).await;
    let later_task = app.wait_finished(later, Duration::from_secs(10)).await;
    assert_eq!(later_task["state"], "done", "{later_task}");
    next.stop().await;
}

/// SIGTERM with a shutdown timeout shorter than the running task: the process exits 0 soon after the timeout,
/// having handed the task back (queued, the interrupted attempt not counted, a fresh stream entry nobody holds),
/// so the next worker starts it at once and finishes it on attempt 1.
#[tokio::test]
async fn sigterm_hands_back_a_task_that_outlives_the_shutdown_timeout() {
    let shutdown_timeout = Duration::from_millis(1500);
    let app = spawn_app_with(TestConfig::new().await.set(
        "SHUTDOWN_TIMEOUT",
        shutdown_timeout.as_secs_f64().to_string(),
    ))
    .await;
    let (id, mut worker, _) = worker_running_a_sleep(&app, 3000).await;

    worker.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = worker.exit_within(Duration::from_secs(5)).await;
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{status}\n{}", worker.output());
    // The timeout counts from the signal; the margin covers the hand-back and the process exit.
    assert!(
        took < shutdown_timeout + Duration::from_millis(750),
        "exit took {took:?} with SHUTDOWN_TIMEOUT={shutdown_timeout:?}"
    );
    assert!(
        took >= shutdown_timeout,
        "the task was interrupted before SHUTDOWN_TIMEOUT: {took:?}"
    );
    assert!(
        worker.output().contains("handed back an interrupted task"),
        "{}",
        worker.output()
    );

    let task = app.task(id).await;
    assert_eq!(task["state"], "queued", "handed back: {task}");
    assert_eq!(
        task["attempts"], 0,
        "the interrupted attempt is not counted: {task}"
    );
    // In Redis: one entry, delivered to nobody (not left pending for a takeover after the claim timeout).
    let stream = format!("{}:stream", app.config.vars["QUEUE_NAME"]);
    let mut redis = redis_connection(&app.config).await;
    let length: usize = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    let pending: redis::streams::StreamPendingReply = redis::cmd("XPENDING")
        .arg(&stream)
        .arg("workers")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(length, 1, "the handed-back task is on the stream");
    assert_eq!(
        pending.count(),
        0,
        "no entry is left held by the old worker"
    );

    let next = spawn_worker(&app.config).await;
    let restarted = Instant::now();
    let task = app.wait_finished(id, Duration::from_secs(10)).await;
    assert_eq!(task["state"], "done", "{task}");
    assert_eq!(task["attempts"], 1, "{task}");
    println!(
        "SIGTERM over the shutdown timeout: exit after {} ms, done {} ms after a new worker started",
        took.as_millis(),
        restarted.elapsed().as_millis()
    );
    next.stop().await;
}

/// SIGTERM of `app serve` during a long poll: new connections are refused at once, the in-flight request still
/// gets its full answer (200 after its 3 s wait), then the process exits 0.
#[tokio::test]
async fn sigterm_lets_serve_finish_an_in_flight_request_then_exit_0() {
    let config = TestConfig::new().await;
    let mut vars = child_vars(&config.vars);
    // sqlx logs each query at debug inside the request's span: how the test sees the request being handled.
    vars.insert("RUST_LOG".into(), "info,sqlx::query=debug".into());
    let base = format!("http://{}", vars["LISTEN_ADDR"]);
    let mut server = AppProcess::spawn(&vars, &["serve"]);
    let client = reqwest::Client::new();
    let healthz = format!("{base}/healthz");
    server
        .eventually("`app serve` answers", Duration::from_secs(10), || async {
            match client.get(&healthz).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                Ok(response) => Err(response.status().to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
    // A task nobody runs: the long poll lasts its whole 3 s.
    let response = client
        .post(format!("{base}/api/tasks"))
        .json(&json!({"kind": "sleep", "payload": {"ms": 10}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let slow = tokio::spawn({
        let url = format!("{base}/api/tasks/{id}?wait=3");
        async move {
            let started = Instant::now();
            let response = reqwest::Client::new().get(url).send().await;
            (response, started.elapsed())
        }
    });
    server
        .wait_for_line(
            &[&format!("/api/tasks/{id}"), "sqlx::query"],
            Duration::from_secs(5),
        )
        .await;
    server.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // Stops accepting: new connections are refused while the slow request is still running.
    let addr = vars["LISTEN_ADDR"].clone();
    eventually(
        "new connections refused within 2 s of SIGTERM",
        Duration::from_secs(2).saturating_sub(signalled.elapsed()),
        || async {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(_) => Err("still accepting connections"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    assert!(!slow.is_finished(), "the slow request ended too early");

    let (response, took) = slow.await.unwrap();
    let response = response.expect("the in-flight request completes after SIGTERM");
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["state"], "queued", "{task}");
    assert!(
        took >= Duration::from_millis(2900),
        "the long poll was cut short: {took:?}"
    );

    let status = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.output());
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "exit took longer than SHUTDOWN_TIMEOUT"
    );
    assert!(server.output().contains("server stopped"));
}
