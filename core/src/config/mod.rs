//! Settings from the environment (12-factor), validated all at once.
//!
//! Every problem is collected before anything fails (see [`env`]), so a misconfigured deployment is fixed in one
//! round trip. Secrets are held in [`SecretString`]: their `Debug` prints `[REDACTED]`, and no error message ever
//! quotes them. Each default is written once, here or in [`TaskSettings::default`].

mod dependencies;
mod env;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

pub use dependencies::DatabaseSettings;
pub use env::ConfigError;
use env::Env;

/// The key `DEBUG=true` falls back to. Refused when `DEBUG=false`, like Django's `django-insecure-` keys.
pub const DEVELOPMENT_SECRET_KEY: &str = "dev-insecure-secret-key-do-not-use-in-production";
const MIN_SECRET_KEY_LEN: usize = 32;
/// Shortest `API_TOKEN` accepted: anything shorter could be guessed online.
pub const MIN_API_TOKEN_LEN: usize = 16;

/// `LISTEN_ADDR` when unset; `app healthcheck` probes its port too.
pub const DEFAULT_LISTEN_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8000);
/// `METRICS_ADDR` when unset; `app healthcheck --metrics` probes its port too.
pub const DEFAULT_METRICS_ADDR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 9000);

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis_url: SecretString,
    pub secret_key: SecretString,
    /// `API_TOKEN`: when set, every `/api/...` route requires `Authorization: Bearer <token>` (`http::api_token`).
    pub api_token: Option<SecretString>,
    pub debug: bool,
    /// `ALLOWED_HOSTS` patterns, lowercased (matched by `http::hosts`).
    pub allowed_hosts: Vec<String>,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub wait_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// `serve` only: how long it keeps serving after SIGTERM before it stops accepting (see `Application`).
    pub shutdown_delay: Duration,
    pub migrate_on_start: bool,
    pub static_dir: Option<PathBuf>,
    /// With `debug`: templates read from here on each change instead of the embedded ones.
    pub template_dir: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub log_format: LogFormat,
    /// `LOG_PROBES`: also log `/healthz` and `/readyz` at info (off: orchestrators call them every few seconds).
    pub log_probes: bool,
    pub tasks: TaskSettings,
}

/// The tasks' settings: the queue (`QUEUE_*`), the worker (`WORKER_CONCURRENCY`, `TASK_*`) and retention; defaults
/// are small enough for a demo (crash pick-up < 30 s, `dead` < 1 min).
#[derive(Debug, Clone)]
pub struct TaskSettings {
    pub name: String,
    pub concurrency: usize,
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub claim_idle: Duration,
    pub task_timeout: Duration,
    pub retention: Duration,
    /// `IDEMPOTENCY_KEY_TTL_HOURS`: how long an `Idempotency-Key` names its task (`tasks::idempotency`).
    pub idempotency_ttl: Duration,
    /// `QUEUE_MAX_BACKLOG`: unfinished tasks at which new ones are refused (0: no bound; `tasks::backlog`).
    pub max_backlog: u64,
}

impl Default for TaskSettings {
    fn default() -> Self {
        Self {
            name: "tasks".into(),
            concurrency: 4,
            max_attempts: 5,
            retry_base: Duration::from_millis(1000),
            claim_idle: Duration::from_millis(10_000),
            task_timeout: Duration::from_secs(120),
            retention: Duration::from_secs(168 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            max_backlog: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Env::new(&lookup);
        let debug = env.flag("DEBUG", false);
        let database = dependencies::database_settings(&mut env);
        let redis_url = dependencies::redis_url(&mut env);
        let secret_key = secret_key(&mut env, debug);
        let api_token = api_token(&mut env);
        let allowed_hosts = env
            .string("ALLOWED_HOSTS")
            .unwrap_or_else(|| "localhost,127.0.0.1,[::1]".into())
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_ascii_lowercase)
            .collect();
        let log_format = log_format(&mut env, debug);
        let defaults = TaskSettings::default();
        let tasks = TaskSettings {
            name: env.string("QUEUE_NAME").unwrap_or(defaults.name),
            concurrency: env.positive("WORKER_CONCURRENCY", defaults.concurrency),
            max_attempts: env.positive("TASK_MAX_ATTEMPTS", defaults.max_attempts),
            retry_base: env.millis("TASK_RETRY_BASE_MS", defaults.retry_base),
            claim_idle: env.millis("TASK_CLAIM_IDLE_MS", defaults.claim_idle),
            task_timeout: env.seconds("TASK_TIMEOUT", defaults.task_timeout),
            retention: env.hours("TASK_RETENTION_HOURS", defaults.retention),
            idempotency_ttl: env.hours("IDEMPOTENCY_KEY_TTL_HOURS", defaults.idempotency_ttl),
            max_backlog: env.parse("QUEUE_MAX_BACKLOG", defaults.max_backlog),
        };
        let settings = Settings {
            database,
            redis_url,
            secret_key,
            api_token,
            debug,
            allowed_hosts,
            listen_addr: env.parse("LISTEN_ADDR", DEFAULT_LISTEN_ADDR),
            metrics_addr: env.parse("METRICS_ADDR", DEFAULT_METRICS_ADDR),
            wait_timeout: env.seconds("WAIT_TIMEOUT", Duration::from_secs(60)),
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT", Duration::from_secs(20)),
            shutdown_delay: env.seconds("SHUTDOWN_DELAY", Duration::ZERO),
            migrate_on_start: env.flag("MIGRATE_ON_START", false),
            static_dir: env.string("STATIC_DIR").map(PathBuf::from),
            template_dir: env.string("TEMPLATE_DIR").map(PathBuf::from),
            max_body_bytes: env.positive("MAX_BODY_BYTES", 1024 * 1024),
            request_timeout: env.seconds("REQUEST_TIMEOUT", Duration::from_secs(30)),
            log_format,
            log_probes: env.flag("LOG_PROBES", false),
            tasks,
        };
        env.finish(settings)
    }

    pub fn pg_connect_options(&self) -> PgConnectOptions {
        // Validated in `database_settings`, so this parse cannot fail for a built `Settings`.
        PgConnectOptions::from_str(self.database.url.expose_secret())
            .unwrap_or_else(|_| PgConnectOptions::new())
    }

    /// The connect options of each password to try, in order: `POSTGRES_PASSWORD` (or `DATABASE_URL`'s), then
    /// `POSTGRES_PASSWORD_PREVIOUS` when set. Never empty.
    pub fn pg_logins(&self) -> Vec<PgConnectOptions> {
        let current = self.pg_connect_options();
        let previous = self
            .database
            .previous_password
            .as_ref()
            .map(|password| current.clone().password(password.expose_secret()));
        std::iter::once(current).chain(previous).collect()
    }
}

fn log_format(env: &mut Env<'_>, debug: bool) -> LogFormat {
    match env.string("LOG_FORMAT").as_deref() {
        None if debug => LogFormat::Pretty,
        None => LogFormat::Json,
        Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        Some(other) => {
            env.problem(format!(
                "LOG_FORMAT: expected `json` or `pretty`, got `{other}`"
            ));
            LogFormat::Json
        }
    }
}

fn secret_key(env: &mut Env<'_>, debug: bool) -> SecretString {
    match env.secret("SECRET_KEY") {
        Some(key) if !debug => {
            let exposed = key.expose_secret();
            if exposed == DEVELOPMENT_SECRET_KEY {
                env.problem(
                    "SECRET_KEY: the development key must not be used with DEBUG=false".into(),
                );
            } else if exposed.chars().count() < MIN_SECRET_KEY_LEN {
                env.problem(format!(
                    "SECRET_KEY: must be at least {MIN_SECRET_KEY_LEN} characters with DEBUG=false"
                ));
            }
            key
        }
        Some(key) => key,
        None if debug => SecretString::from(DEVELOPMENT_SECRET_KEY),
        None => {
            if !env.is_set("SECRET_KEY") {
                env.problem("SECRET_KEY (or SECRET_KEY_FILE) is required when DEBUG=false".into());
            }
            SecretString::from(String::new())
        }
    }
}

/// Optional: unset, the API is public (the demo's default). Its length is checked, its value never quoted.
fn api_token(env: &mut Env<'_>) -> Option<SecretString> {
    let token = env.secret("API_TOKEN")?;
    let exposed = token.expose_secret();
    if exposed.chars().count() < MIN_API_TOKEN_LEN {
        env.problem(format!(
            "API_TOKEN: must be at least {MIN_API_TOKEN_LEN} characters"
        ));
    }
    // A client sends it as `Authorization: Bearer <token>`: a space or a control character could never match.
    if !exposed.bytes().all(|b| b.is_ascii_graphic()) {
        env.problem("API_TOKEN: only visible ASCII characters, no spaces".into());
    }
    Some(token)
}

#[cfg(test)]
mod tests;
