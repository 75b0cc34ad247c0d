//! `spawn_app()` and friends: each test gets its own database (a copy of a migrated template), its own Redis key
//! prefix and its own ports.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use app::config::Settings;
use app::startup::Application;
use app::tasks::worker::Worker;
use app::tasks::{Queue, TaskStore};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{OnceCell, oneshot};
use uuid::Uuid;

use crate::servers;

pub const SECRET_KEY: &str = "test-secret-key-0123456789abcdef-0123456789";
/// `TASK_CLAIM_IDLE_MS` of every test: a killed worker's task is taken over after this.
pub const CLAIM_IDLE: Duration = Duration::from_millis(1500);
/// `DB_ACQUIRE_TIMEOUT_MS` of every test: how long a request waits for a PostgreSQL connection.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(500);
/// How often [`eventually`] asks again.
const POLL_EVERY: Duration = Duration::from_millis(20);
const TEMPLATE_DB: &str = "app_test_template";

/// A database URL on the same server as `admin_url`, for database `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url).expect("admin URL parses");
    url.set_path(name);
    url.to_string()
}

/// Creates a fresh database; migrated (from a template migrated once per server) when `migrated`.
pub async fn create_database(admin_url: &str, migrated: bool) -> String {
    static TEMPLATES: OnceCell<()> = OnceCell::const_new();
    let name = format!("test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect to the test PostgreSQL");
    if migrated {
        // Only the shared server uses the template; dedicated servers migrate directly below.
        if admin_url == servers::shared().postgres_admin_url {
            TEMPLATES
                .get_or_init(|| async {
                    let mut admin = PgConnection::connect(admin_url).await.expect("connect");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {TEMPLATE_DB}"
                    )))
                    .execute(&mut admin)
                    .await
                    .expect("drop old template");
                    sqlx::query(sqlx::AssertSqlSafe(format!(
                        "CREATE DATABASE {TEMPLATE_DB}"
                    )))
                    .execute(&mut admin)
                    .await
                    .expect("create template");
                    let pool = PgPool::connect(&database_url(admin_url, TEMPLATE_DB))
                        .await
                        .expect("connect template");
                    app::db::migrate(&pool.clone().into(), app::db::NewerMigrations::Refuse)
                        .await
                        .expect("migrate template");
                    pool.close().await;
                })
                .await;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"
            )))
            .execute(&mut admin)
            .await
            .expect("create test database");
            return database_url(admin_url, &name);
        }
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = database_url(admin_url, &name);
    if migrated {
        let pool = PgPool::connect(&url).await.expect("connect");
        app::db::migrate(&pool.clone().into(), app::db::NewerMigrations::Refuse)
            .await
            .expect("migrate");
        pool.close().await;
    }
    url
}

/// Asks `probe` until it answers `Ok`, and returns the answer with how long it took. After `within`, fails the test
/// with `what` and the last `Err`, which says what was seen instead.
pub async fn eventually<T, E, F, Fut>(what: &str, within: Duration, mut probe: F) -> (T, Duration)
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return (value, started.elapsed()),
            Err(seen) => assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; last seen: {seen}"
            ),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Settings for a test: its own database and queue, loopback ports chosen by the OS.
pub struct TestConfig {
    pub vars: HashMap<String, String>,
}

impl TestConfig {
    pub async fn new() -> Self {
        let shared = servers::shared();
        let database = create_database(&shared.postgres_admin_url, true).await;
        Self::with_servers(database, shared.redis_url.clone())
    }

    pub fn with_servers(database_url: String, redis_url: String) -> Self {
        let vars = [
            ("DATABASE_URL", database_url),
            ("REDIS_URL", redis_url),
            ("SECRET_KEY", SECRET_KEY.to_string()),
            ("LISTEN_ADDR", "127.0.0.1:0".into()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
            ("QUEUE_NAME", format!("test-{}", Uuid::new_v4().simple())),
            ("WAIT_TIMEOUT", "10".into()),
            ("SHUTDOWN_TIMEOUT", "10".into()),
            (
                "DB_ACQUIRE_TIMEOUT_MS",
                ACQUIRE_TIMEOUT.as_millis().to_string(),
            ),
            ("TASK_RETRY_BASE_MS", "100".into()),
            ("TASK_CLAIM_IDLE_MS", CLAIM_IDLE.as_millis().to_string()),
            ("TASK_MAX_ATTEMPTS", "3".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self { vars }
    }

    pub fn set(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    pub fn settings(&self) -> Settings {
        Settings::from_lookup(|name| self.vars.get(name).cloned()).expect("test settings are valid")
    }
}

pub struct TestApp {
    pub address: String,
    pub metrics_address: String,
    pub client: reqwest::Client,
    pub pool: PgPool,
    pub config: TestConfig,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestConfig::new().await).await
}

pub async fn spawn_app_with(config: TestConfig) -> TestApp {
    let settings = config.settings();
    let application = Application::build(settings.clone())
        .await
        .expect("the application builds");
    let address = format!("http://{}", application.local_addr().expect("bound"));
    let metrics_address = format!("http://{}", application.metrics_addr().expect("bound"));
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(settings.pg_connect_options());
    TestApp {
        address,
        metrics_address,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        pool,
        config,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path`; not getting an answer fails the test.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET path` with one extra header.
    pub async fn get_with(&self, path: &str, header: &str, value: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .header(header, value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn post_task(&self, kind: &str, payload: Value) -> reqwest::Response {
        self.client
            .post(self.url("/api/tasks"))
            .json(&json!({ "kind": kind, "payload": payload }))
            .send()
            .await
            .expect("request sent")
    }

    /// Posts a task and returns its id (asserting 202).
    pub async fn enqueue(&self, kind: &str, payload: Value) -> Uuid {
        let response = self.post_task(kind, payload).await;
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.expect("json");
        body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id")
    }

    pub async fn task(&self, id: Uuid) -> Value {
        self.task_with_wait(id, "0").await
    }

    /// Polls until the task is `done` or `dead`, or panics after `timeout`.
    pub async fn wait_finished(&self, id: Uuid, timeout: Duration) -> Value {
        let finished = || async {
            let task = self.task(id).await;
            match task["state"].as_str() {
                Some("done" | "dead") => Ok(task),
                _ => Err(task),
            }
        };
        eventually(&format!("task {id} finished"), timeout, finished)
            .await
            .0
    }

    pub async fn task_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM tasks")
            .fetch_one(&self.pool)
            .await
            .expect("count tasks")
    }

    /// An in-process worker on this app's database and queue; stop it by dropping or sending on the handle.
    pub async fn spawn_worker(&self) -> WorkerHandle {
        spawn_worker(&self.config).await
    }

    /// Stops the server as SIGTERM would, and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    join: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl WorkerHandle {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            let result = join.await.expect("worker task");
            result.expect("worker stopped cleanly");
        }
    }
}

/// A connection to the queue of the test's settings (its own key prefix).
pub async fn queue_of(config: &TestConfig) -> Queue {
    let settings = config.settings();
    Queue::connect(
        secrecy::ExposeSecret::expose_secret(&settings.redis_url),
        &settings.tasks.name,
    )
    .await
    .expect("queue connects")
}

/// A plain connection to the test's Redis, for looking at the queue's keys directly.
pub async fn redis_connection(config: &TestConfig) -> redis::aio::MultiplexedConnection {
    redis::Client::open(config.vars["REDIS_URL"].as_str())
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test Redis")
}

pub async fn spawn_worker(config: &TestConfig) -> WorkerHandle {
    let settings = config.settings();
    let queue = queue_of(config).await;
    let pool = app::db::worker_pool(&settings);
    let worker = Worker::new(TaskStore::new(pool), queue, settings.tasks.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let join = tokio::spawn(worker.run_until_stopped(
        async move {
            let _ = stopped.await;
        },
        settings.shutdown_timeout,
    ));
    WorkerHandle {
        stop: Some(stop),
        join: Some(join),
    }
}

/// The `app` binary built by cargo for this test run.
pub fn app_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_app"))
}

/// `app <args>` with exactly `vars` as its environment (nothing leaks in from the test's own).
pub fn app_command(vars: &HashMap<String, String>, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(app_binary());
    cmd.env_clear()
        .envs(vars)
        .env("LOG_FORMAT", "json")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

impl TestApp {
    /// `GET /api/tasks/{id}?wait=<seconds>`.
    pub async fn task_with_wait(&self, id: Uuid, wait: &str) -> Value {
        self.client
            .get(self.url(&format!("/api/tasks/{id}?wait={wait}")))
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("json")
    }
}
