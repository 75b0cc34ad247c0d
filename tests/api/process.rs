//! The real `app` binary as a child process: SIGKILL and SIGTERM of `app tasks`, SIGTERM of `app serve`, and the
//! exit statuses and output of the operational commands (`check`, `wait`, `healthcheck`, `collectstatic`,
//! `migrate`). Children get exactly the variables a test gives them (`helpers::app_command` clears the rest).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::helpers::{
    TestApp, TestConfig, app_command, create_database, spawn_app, spawn_app_with, spawn_worker,
};
use crate::servers::{self, free_port};

/// `TASK_CLAIM_IDLE_MS` of `TestConfig`.
const CLAIM_IDLE: Duration = Duration::from_millis(1500);

/// A test's variables with concrete loopback ports: a child process cannot report the port it got for `:0`.
fn child_vars(vars: &HashMap<String, String>) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    vars.insert("METRICS_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    vars
}

fn vars_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A long-running `app` child (`serve`, `tasks`); its stdout and stderr lines are collected.
struct AppProcess {
    name: String,
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    })
}

impl AppProcess {
    fn spawn(vars: &HashMap<String, String>, args: &[&str]) -> Self {
        let mut cmd = app_command(vars, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the app binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect_lines(child.stdout.take().expect("piped"), lines.clone()),
            collect_lines(child.stderr.take().expect("piped"), lines.clone()),
        ];
        Self {
            name: format!("app {}", args.join(" ")),
            child,
            lines,
            readers,
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("the child is still running") as i32;
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Panics, with the child's output, when it has already exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "`{}` exited early ({status}); its output:\n{}",
                self.name,
                self.output()
            );
        }
    }

    /// Waits until an output line contains every one of `needles`.
    async fn wait_for_line(&mut self, needles: &[&str], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| needles.iter().all(|n| l.contains(n)))
            {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "`{}` logged no line with {needles:?} within {within:?}; its output:\n{}",
                self.name,
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the exit (and for the rest of its output).
    async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "`{}` did not exit within {limit:?}; its output:\n{}",
                self.name,
                self.output()
            ),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        status
    }

    /// SIGTERM, then a clean exit (status 0) within the test `SHUTDOWN_TIMEOUT` (10 s) and a margin.
    async fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.exit_within(Duration::from_secs(15)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "`{}` after SIGTERM: {status}; output:\n{}",
            self.name,
            self.output()
        );
    }
}

/// A one-shot command: its status, stdout, stderr and how long it took.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Finished {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

async fn run(vars: &HashMap<String, String>, args: &[&str], limit: Duration) -> Finished {
    let started = Instant::now();
    let output = tokio::time::timeout(limit, app_command(vars, args).output())
        .await
        .unwrap_or_else(|_| panic!("`app {}` did not finish within {limit:?}", args.join(" ")))
        .expect("the app binary runs");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The JSON log lines among `text`'s lines.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Polls the task until `done(task)` holds; panics with the task and the worker's output otherwise.
async fn wait_for_task(
    app: &TestApp,
    id: Uuid,
    what: &str,
    within: Duration,
    worker: &mut AppProcess,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let task = app.task(id).await;
        if done(&task) {
            return task;
        }
        worker.assert_running();
        assert!(
            Instant::now() < deadline,
            "task {id} not {what} within {within:?}: {task}\nworker output:\n{}",
            worker.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn redis_connection(config: &TestConfig) -> redis::aio::MultiplexedConnection {
    redis::Client::open(config.vars["REDIS_URL"].as_str())
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

// ---------------------------------------------------------------------------------------------------------------
// `app tasks` and `app serve` under signals
// ---------------------------------------------------------------------------------------------------------------

/// kill -9 mid-task loses nothing: another worker takes the task over once the dead worker's claim has been idle
/// for `TASK_CLAIM_IDLE_MS`, and it ends `done` on its second attempt (attempts are counted when they start).
#[tokio::test]
async fn a_worker_killed_with_sigkill_mid_task_loses_nothing() {
    let app = spawn_app().await;
    let id = app.enqueue("sleep", json!({"ms": 2000})).await;
    let mut first = AppProcess::spawn(&child_vars(&app.config.vars), &["tasks"]);
    let running = wait_for_task(
        &app,
        id,
        "running",
        Duration::from_secs(10),
        &mut first,
        |t| t["state"] == "running",
    )
    .await;
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
    let id = app.enqueue("sleep", json!({"ms": 1500})).await;
    let mut worker = AppProcess::spawn(&child_vars(&app.config.vars), &["tasks"]);
    wait_for_task(
        &app,
        id,
        "running",
        Duration::from_secs(10),
        &mut worker,
        |t| t["state"] == "running",
    )
    .await;

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
    let id = app.enqueue("sleep", json!({"ms": 3000})).await;
    let mut worker = AppProcess::spawn(&child_vars(&app.config.vars), &["tasks"]);
    wait_for_task(
        &app,
        id,
        "running",
        Duration::from_secs(10),
        &mut worker,
        |t| t["state"] == "running",
    )
    .await;

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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(response) = client.get(format!("{base}/healthz")).send().await
            && response.status() == 200
        {
            break;
        }
        server.assert_running();
        assert!(Instant::now() < deadline, "`app serve` never answered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
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
    loop {
        if tokio::net::TcpStream::connect(&addr).await.is_err() {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "still accepting connections 2 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

// ---------------------------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------------------------

const PG_SECRET: &str = "pg-pass-hunter2-e1f3";
const REDIS_SECRET: &str = "redis-pass-hunter2-77c0";
const KEY_SECRET: &str = "secret-key-hunter2-0123456789abcdef-0123456789";

fn assert_no_secret(finished: &Finished, secrets: &[&str]) {
    let all = finished.all();
    for secret in secrets {
        assert!(!all.contains(secret), "a secret leaked: {all}");
    }
}

/// Several bad variables at once: every command that loads the configuration lists every problem and exits 2,
/// without quoting any secret.
#[tokio::test]
async fn an_invalid_configuration_lists_every_problem_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("secret_key");
    std::fs::write(&key_file, format!("{KEY_SECRET}-from-file\n")).unwrap();
    let unreadable = dir.path().join("no-such-file");
    let vars = vars_of(&[
        // POSTGRES_PASSWORD missing (and no DATABASE_URL).
        ("POSTGRES_HOST", "127.0.0.1"),
        ("LISTEN_ADDR", "not-an-address"),
        ("SECRET_KEY", KEY_SECRET),
        ("SECRET_KEY_FILE", key_file.to_str().unwrap()),
        ("REDIS_PASSWORD_FILE", unreadable.to_str().unwrap()),
        (
            "REDIS_URL",
            &format!("redis://:{REDIS_SECRET}@127.0.0.1:1/0"),
        ),
    ]);
    let expected = [
        "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is required",
        "LISTEN_ADDR: cannot parse `not-an-address`",
        "SECRET_KEY and SECRET_KEY_FILE are both set",
        "REDIS_PASSWORD_FILE: cannot read",
    ];
    for command in ["check", "serve", "tasks", "migrate", "wait"] {
        let finished = run(&vars, &[command], Duration::from_secs(10)).await;
        assert_eq!(
            finished.status.code(),
            Some(2),
            "`app {command}`: {}",
            finished.all()
        );
        assert!(
            finished
                .stderr
                .contains("invalid configuration (4 problem(s))"),
            "`app {command}`: {}",
            finished.stderr
        );
        for problem in expected {
            assert!(
                finished.stderr.contains(problem),
                "`app {command}` did not report `{problem}`: {}",
                finished.stderr
            );
        }
        assert_no_secret(&finished, &[KEY_SECRET, REDIS_SECRET, "hunter2"]);
    }
}

/// The development key is refused with DEBUG=false, and a malformed value of a secret is reported without it.
#[tokio::test]
async fn the_development_key_and_malformed_secrets_are_refused_without_quoting_them() {
    let dev_key = app::config::DEVELOPMENT_SECRET_KEY;
    let vars = vars_of(&[
        ("DEBUG", "false"),
        ("SECRET_KEY", dev_key),
        ("DATABASE_URL", "postgres://u:pg-pass-hunter2-e1f3@[bad/db"),
        ("REDIS_URL", "not a url redis-pass-hunter2-77c0"),
        ("METRICS_ADDR", "9000"),
    ]);
    for command in ["check", "serve"] {
        let finished = run(&vars, &[command], Duration::from_secs(10)).await;
        assert_eq!(finished.status.code(), Some(2), "{}", finished.all());
        for problem in [
            "invalid configuration (4 problem(s))",
            "SECRET_KEY: the development key must not be used with DEBUG=false",
            "DATABASE_URL: not a valid PostgreSQL URL",
            "REDIS_URL: not a valid redis:// URL",
            "METRICS_ADDR: cannot parse",
        ] {
            assert!(
                finished.stderr.contains(problem),
                "`app {command}` did not report `{problem}`: {}",
                finished.stderr
            );
        }
        assert_no_secret(&finished, &[dev_key, "hunter2"]);
    }

    // The same key is fine in development, where it is the default anyway.
    let dev = vars_of(&[("DEBUG", "true"), ("POSTGRES_PASSWORD", PG_SECRET)]);
    let finished = run(&dev, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert_no_secret(&finished, &[dev_key, PG_SECRET]);
}

/// A valid configuration: `app check` exits 0 and prints it with `[REDACTED]` / `***` in place of secrets.
#[tokio::test]
async fn check_prints_a_valid_configuration_with_secrets_redacted() {
    let vars = vars_of(&[
        ("POSTGRES_PASSWORD", PG_SECRET),
        ("SECRET_KEY", KEY_SECRET),
        ("REDIS_PASSWORD", REDIS_SECRET),
        ("LISTEN_ADDR", "127.0.0.1:8123"),
    ]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    let out = &finished.stdout;
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(
        out.contains("postgres://postgres:***@db:5432/postgres"),
        "{out}"
    );
    assert!(out.contains("redis://:***@redis:6379/0"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("secret_key") && l.contains("[REDACTED]")),
        "{out}"
    );
    assert!(out.contains("127.0.0.1:8123"), "{out}");
    assert_no_secret(&finished, &[PG_SECRET, REDIS_SECRET, KEY_SECRET]);

    // A password given as a query parameter (sqlx accepts `?password=`) is hidden too.
    let vars = vars_of(&[
        (
            "DATABASE_URL",
            &format!("postgres://app@db:5432/app?password={PG_SECRET}&sslmode=disable"),
        ),
        ("SECRET_KEY", KEY_SECRET),
    ]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(
        finished
            .stdout
            .contains("postgres://app@db:5432/app?password=***&sslmode=disable"),
        "{}",
        finished.stdout
    );
    assert_no_secret(&finished, &[PG_SECRET, KEY_SECRET]);
}

/// Docker secrets: every secret can come from `NAME_FILE` (trailing newline ignored), and the file's content is
/// what is used and validated.
#[tokio::test]
async fn secrets_can_be_given_as_files() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, value: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let pg = write("pg", PG_SECRET);
    let redis = write("redis", REDIS_SECRET);
    let key = write("key", KEY_SECRET);
    let vars = vars_of(&[
        ("POSTGRES_PASSWORD_FILE", &pg),
        ("REDIS_PASSWORD_FILE", &redis),
        ("SECRET_KEY_FILE", &key),
    ]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(
        finished
            .stdout
            .contains("postgres://postgres:***@db:5432/postgres"),
        "{}",
        finished.stdout
    );
    assert!(
        finished.stdout.contains("redis://:***@redis:6379/0"),
        "{}",
        finished.stdout
    );
    assert_no_secret(&finished, &[PG_SECRET, REDIS_SECRET, KEY_SECRET]);

    // The file's content is validated like the variable would be.
    let weak = write("weak", app::config::DEVELOPMENT_SECRET_KEY);
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let vars = vars_of(&[
        ("POSTGRES_PASSWORD_FILE", empty.to_str().unwrap()),
        ("SECRET_KEY_FILE", &weak),
    ]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(2), "{}", finished.all());
    assert!(
        finished
            .stderr
            .contains("SECRET_KEY: the development key must not be used"),
        "{}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("POSTGRES_PASSWORD_FILE: file"),
        "{}",
        finished.stderr
    );

    // End to end: with the URLs only in files, `app wait` reaches the real servers.
    let config = TestConfig::new().await;
    let db_file = write("database_url", &config.vars["DATABASE_URL"]);
    let redis_file = write("redis_url", &config.vars["REDIS_URL"]);
    let vars = vars_of(&[
        ("DATABASE_URL_FILE", &db_file),
        ("REDIS_URL_FILE", &redis_file),
        ("SECRET_KEY_FILE", &key),
        ("WAIT_TIMEOUT", "5"),
    ]);
    let finished = run(&vars, &["wait"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
}

// ---------------------------------------------------------------------------------------------------------------
// wait, healthcheck, collectstatic, migrate
// ---------------------------------------------------------------------------------------------------------------

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
fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[tokio::test]
async fn collectstatic_writes_hashed_names_a_manifest_and_valid_gzip_reproducibly() {
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    let finished = run(
        &HashMap::new(),
        &["collectstatic", first.to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    let files = read_tree(&first);

    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let paths = manifest["paths"].as_object().expect("manifest.paths");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let sources = read_tree(&source);
    assert_eq!(
        paths.keys().cloned().collect::<Vec<_>>(),
        sources.keys().cloned().collect::<Vec<_>>(),
        "the manifest maps every file of static/"
    );
    for (logical, hashed) in paths {
        let hashed = hashed.as_str().unwrap();
        let original = &sources[logical];
        // app.css → app.<first 8 hex digits of the SHA-256 of the content>.css
        let (stem, ext) = logical.rsplit_once('.').unwrap();
        let digest = hex::encode(&Sha256::digest(original)[..4]);
        assert_eq!(hashed, format!("{stem}.{digest}.{ext}"));
        assert_eq!(&files[logical], original, "{logical}");
        assert_eq!(&files[hashed], original, "{hashed}");
        for name in [logical.as_str(), hashed] {
            let gz = files
                .get(&format!("{name}.gz"))
                .unwrap_or_else(|| panic!("no {name}.gz"));
            assert_eq!(&gz[..2], &[0x1f, 0x8b], "{name}.gz is gzip");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .unwrap_or_else(|e| panic!("{name}.gz does not decode: {e}"));
            assert_eq!(&decoded, original, "{name}.gz decodes to the original");
        }
    }
    // Nothing else is written: each asset twice, each with a .gz, plus the manifest.
    assert_eq!(files.len(), paths.len() * 4 + 1, "{:?}", files.keys());

    let second = out.path().join("second");
    let finished = run(
        &HashMap::new(),
        &["collectstatic", second.to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(
        read_tree(&second) == files,
        "a second run gives byte-identical files"
    );

    // An unwritable destination is an error, not a silent success.
    let blocker = out.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let finished = run(
        &HashMap::new(),
        &["collectstatic", blocker.join("sub").to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
}

#[tokio::test]
async fn migrate_applies_the_migrations_to_an_empty_database() {
    let shared = servers::shared();
    let empty = create_database(&shared.postgres_admin_url, false).await;
    let config = TestConfig::with_servers(empty, shared.redis_url.clone());
    let pool = sqlx::PgPool::connect(&config.vars["DATABASE_URL"])
        .await
        .unwrap();
    assert!(
        app::db::migration_state(&pool).await.unwrap().pending > 0,
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
    let response = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["checks"]["migrations"],
        "ok"
    );
}
