//! Settings from the environment (12-factor), validated all at once.
//!
//! Every problem is collected before anything fails, so a misconfigured deployment is fixed in one round trip.
//! Secrets are held in [`SecretString`]: their `Debug` prints `[REDACTED]`, and no error message ever quotes them.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

/// The key `DEBUG=true` falls back to. Refused when `DEBUG=false`, like Django's `django-insecure-` keys.
pub const DEVELOPMENT_SECRET_KEY: &str = "dev-insecure-secret-key-do-not-use-in-production";
const MIN_SECRET_KEY_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub redis_url: SecretString,
    pub secret_key: SecretString,
    pub debug: bool,
    pub allowed_hosts: AllowedHosts,
    pub listen_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub wait_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub migrate_on_start: bool,
    pub static_dir: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub log_format: LogFormat,
    pub queue: QueueSettings,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub pool_size: u32,
    pub acquire_timeout: Duration,
}

/// The worker's tuning knobs; defaults are small enough for a demo (crash pick-up < 30 s, `dead` < 1 min).
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub name: String,
    pub concurrency: usize,
    pub max_attempts: i32,
    pub retry_base: Duration,
    pub claim_idle: Duration,
    pub task_timeout: Duration,
    pub retention: Duration,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            name: "tasks".into(),
            concurrency: 4,
            max_attempts: 5,
            retry_base: Duration::from_millis(1000),
            claim_idle: Duration::from_millis(10_000),
            task_timeout: Duration::from_secs(120),
            retention: Duration::from_secs(168 * 3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// `ALLOWED_HOSTS`, matched like Django: exact names, `.example.com` for a domain and its subdomains, `*` for any.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(
            patterns
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        )
    }

    /// `host` is the raw `Host` header value; its port, if any, is ignored.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host).to_ascii_lowercase();
        if name.is_empty() {
            return false;
        }
        self.0.iter().any(|pattern| {
            pattern == "*"
                || *pattern == name
                || (pattern.starts_with('.')
                    && (name.ends_with(pattern.as_str()) || name == pattern[1..]))
        })
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows `]`.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// All configuration problems found, one per line.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds settings from any variable source (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut env = Env {
            lookup: &lookup,
            problems: Vec::new(),
        };
        let debug = env.parse_bool("DEBUG", false);
        let database = database_settings(&mut env);
        let redis_url = redis_url(&mut env);
        let secret_key = secret_key(&mut env, debug);
        let allowed_hosts = AllowedHosts::new(
            env.string("ALLOWED_HOSTS")
                .unwrap_or_else(|| "localhost,127.0.0.1,[::1]".into())
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        );
        let log_format = match env.string("LOG_FORMAT").as_deref() {
            None => {
                if debug {
                    LogFormat::Pretty
                } else {
                    LogFormat::Json
                }
            }
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                env.problem(format!(
                    "LOG_FORMAT: expected `json` or `pretty`, got `{other}`"
                ));
                LogFormat::Json
            }
        };
        let defaults = QueueSettings::default();
        let queue = QueueSettings {
            name: env.string("QUEUE_NAME").unwrap_or(defaults.name),
            concurrency: env.parse_positive("WORKER_CONCURRENCY", defaults.concurrency),
            max_attempts: env.parse_positive("TASK_MAX_ATTEMPTS", defaults.max_attempts),
            retry_base: env.millis("TASK_RETRY_BASE_MS", defaults.retry_base),
            claim_idle: env.millis("TASK_CLAIM_IDLE_MS", defaults.claim_idle),
            task_timeout: env.seconds("TASK_TIMEOUT", defaults.task_timeout),
            retention: Duration::from_secs(
                3600 * env.parse_positive::<u64>("TASK_RETENTION_HOURS", 168),
            ),
        };
        let settings = Settings {
            database,
            redis_url,
            secret_key,
            debug,
            allowed_hosts,
            listen_addr: env.parse("LISTEN_ADDR", SocketAddr::from(([0, 0, 0, 0], 8000))),
            metrics_addr: env.parse("METRICS_ADDR", SocketAddr::from(([0, 0, 0, 0], 9000))),
            wait_timeout: env.seconds("WAIT_TIMEOUT", Duration::from_secs(60)),
            shutdown_timeout: env.seconds("SHUTDOWN_TIMEOUT", Duration::from_secs(20)),
            migrate_on_start: env.parse_bool("MIGRATE_ON_START", false),
            static_dir: env.string("STATIC_DIR").map(PathBuf::from),
            max_body_bytes: env.parse_positive("MAX_BODY_BYTES", 1024 * 1024),
            request_timeout: env.seconds("REQUEST_TIMEOUT", Duration::from_secs(30)),
            log_format,
            queue,
        };
        if env.problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError {
                problems: env.problems,
            })
        }
    }

    pub fn pg_connect_options(&self) -> PgConnectOptions {
        // Validated in `database_settings`, so this parse cannot fail for a built `Settings`.
        PgConnectOptions::from_str(self.database.url.expose_secret())
            .unwrap_or_else(|_| PgConnectOptions::new())
    }

    /// `(name, value)` pairs for `app check`, secrets redacted.
    pub fn redacted(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            ("database", redact_url(self.database.url.expose_secret())),
            ("db_pool_size", self.database.pool_size.to_string()),
            ("db_acquire_timeout", millis(self.database.acquire_timeout)),
            ("redis", redact_url(self.redis_url.expose_secret())),
            ("secret_key", "[REDACTED]".into()),
            ("debug", self.debug.to_string()),
            ("allowed_hosts", self.allowed_hosts.patterns().join(",")),
            ("listen_addr", self.listen_addr.to_string()),
            ("metrics_addr", self.metrics_addr.to_string()),
            ("wait_timeout", secs(self.wait_timeout)),
            ("shutdown_timeout", secs(self.shutdown_timeout)),
            ("migrate_on_start", self.migrate_on_start.to_string()),
            (
                "static_dir",
                self.static_dir
                    .as_ref()
                    .map_or("(embedded)".into(), |p| p.display().to_string()),
            ),
            ("max_body_bytes", self.max_body_bytes.to_string()),
            ("request_timeout", secs(self.request_timeout)),
            (
                "log_format",
                format!("{:?}", self.log_format).to_lowercase(),
            ),
            ("queue_name", self.queue.name.clone()),
            ("worker_concurrency", self.queue.concurrency.to_string()),
            ("task_max_attempts", self.queue.max_attempts.to_string()),
            ("task_retry_base", millis(self.queue.retry_base)),
            ("task_claim_idle", millis(self.queue.claim_idle)),
            ("task_timeout", secs(self.queue.task_timeout)),
            ("task_retention", secs(self.queue.retention)),
        ]
    }
}

/// Replaces the password of a URL with `***`, for display, also one given as a query parameter
/// (`?password=…`, which sqlx accepts). Unparsable input is hidden entirely.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            let secret_key = |k: &str| k.to_ascii_lowercase().contains("password");
            if url.query_pairs().any(|(k, _)| secret_key(&k)) {
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret_key(&k) {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
            }
            url.to_string()
        }
        Err(_) => "[unparsable, hidden]".into(),
    }
}

fn database_settings(env: &mut Env<'_>) -> DatabaseSettings {
    let pool_size = env.parse_positive("DB_POOL_SIZE", 10);
    let acquire_timeout = env.millis("DB_ACQUIRE_TIMEOUT_MS", Duration::from_millis(2000));
    let explicit_url = env.secret("DATABASE_URL");
    let host = env.string("POSTGRES_HOST").unwrap_or_else(|| "db".into());
    let port: u16 = env.parse("POSTGRES_PORT", 5432);
    let user = env
        .string("POSTGRES_USER")
        .unwrap_or_else(|| "postgres".into());
    let db = env.string("POSTGRES_DB").unwrap_or_else(|| user.clone());
    let password = env.secret("POSTGRES_PASSWORD");
    let url = match explicit_url {
        Some(url) => {
            if PgConnectOptions::from_str(url.expose_secret()).is_err() {
                env.problem("DATABASE_URL: not a valid PostgreSQL URL (value not shown)".into());
            }
            url
        }
        // Set but unusable (both forms, unreadable file): already reported.
        None if env.is_set("DATABASE_URL") => SecretString::from(String::new()),
        None => match password {
            Some(password) => {
                let mut url = url::Url::parse("postgres://localhost").expect("static URL parses");
                let host_ok = url.set_host(Some(&host)).is_ok();
                if !host_ok {
                    env.problem(format!("POSTGRES_HOST: `{host}` is not a valid host name"));
                }
                let _ = url.set_port(Some(port));
                let _ = url.set_username(&user);
                let _ = url.set_password(Some(password.expose_secret()));
                url.set_path(&db);
                SecretString::from(url.to_string())
            }
            None => {
                if !env.is_set("POSTGRES_PASSWORD") {
                    env.problem(
                        "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is required unless DATABASE_URL is set"
                            .into(),
                    );
                }
                SecretString::from(String::new())
            }
        },
    };
    DatabaseSettings {
        url,
        pool_size,
        acquire_timeout,
    }
}

fn redis_url(env: &mut Env<'_>) -> SecretString {
    let raw = env
        .secret("REDIS_URL")
        .unwrap_or_else(|| SecretString::from("redis://redis:6379/0"));
    let password = env.secret("REDIS_PASSWORD");
    let mut url = match url::Url::parse(raw.expose_secret()) {
        Ok(url) if matches!(url.scheme(), "redis" | "rediss") && url.host().is_some() => url,
        _ => {
            env.problem("REDIS_URL: not a valid redis:// URL (value not shown)".into());
            return raw;
        }
    };
    if let Some(password) = password {
        if url.password().is_some() {
            env.problem("REDIS_PASSWORD is set but REDIS_URL already has a password".into());
        } else {
            let _ = url.set_password(Some(password.expose_secret()));
        }
    }
    SecretString::from(url.to_string())
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

/// A variable source plus the problems found so far.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Env<'_> {
    fn problem(&mut self, message: String) {
        self.problems.push(message);
    }

    /// The value of a non-secret variable; empty counts as unset (compose env files often say `X=`).
    fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.trim().is_empty())
    }

    /// Whether `NAME` or `NAME_FILE` is set. A secret that is set but unusable was reported by [`Env::secret`]
    /// already, so it must not be reported again as missing.
    fn is_set(&self, name: &str) -> bool {
        self.string(name).is_some() || self.string(&format!("{name}_FILE")).is_some()
    }

    /// A secret from `NAME` or from the file named by `NAME_FILE`; never quoted in a problem.
    fn secret(&mut self, name: &str) -> Option<SecretString> {
        let direct = self.string(name);
        let file_var = format!("{name}_FILE");
        let file = self.string(&file_var);
        match (direct, file) {
            (Some(_), Some(_)) => {
                self.problem(format!("{name} and {file_var} are both set; set only one"));
                None
            }
            (Some(value), None) => Some(SecretString::from(value)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    let value = contents.trim_end_matches(['\n', '\r']);
                    if value.is_empty() {
                        self.problem(format!("{file_var}: file `{path}` is empty"));
                        None
                    } else {
                        Some(SecretString::from(value))
                    }
                }
                Err(err) => {
                    self.problem(format!("{file_var}: cannot read `{path}`: {err}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn parse<T: FromStr>(&mut self, name: &str, default: T) -> T {
        match self.string(name) {
            None => default,
            Some(raw) => match raw.trim().parse() {
                Ok(value) => value,
                Err(_) => {
                    self.problem(format!(
                        "{name}: cannot parse `{raw}` as {}",
                        short_type_name::<T>()
                    ));
                    default
                }
            },
        }
    }

    fn parse_positive<T: FromStr + PartialOrd + Default + Copy + fmt::Display>(
        &mut self,
        name: &str,
        default: T,
    ) -> T {
        let value = self.parse(name, default);
        if value <= T::default() {
            self.problem(format!("{name}: must be greater than 0, got {value}"));
            return default;
        }
        value
    }

    fn parse_bool(&mut self, name: &str, default: bool) -> bool {
        match self.string(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => {
                self.problem(format!("{name}: expected true or false, got `{v}`"));
                default
            }
        }
    }

    /// Seconds, fractions allowed (`WAIT_TIMEOUT=0.5`).
    fn seconds(&mut self, name: &str, default: Duration) -> Duration {
        let secs: f64 = self.parse(name, default.as_secs_f64());
        if !secs.is_finite() || secs < 0.0 {
            self.problem(format!("{name}: must be a non-negative number of seconds"));
            return default;
        }
        Duration::from_secs_f64(secs)
    }

    fn millis(&mut self, name: &str, default: Duration) -> Duration {
        Duration::from_millis(self.parse_positive(name, default.as_millis() as u64))
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    match full {
        "core::net::socket_addr::SocketAddr" => "a socket address like 0.0.0.0:8000",
        "f64" => "a number",
        "u16" | "u32" | "u64" | "usize" | "i32" => "a whole number",
        _ => full.rsplit("::").next().unwrap_or(full),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    const GOOD_KEY: &str = "0123456789abcdef0123456789abcdef-good";

    #[test]
    fn minimal_live_configuration_is_valid() {
        let s = settings(&[("POSTGRES_PASSWORD", "pw"), ("SECRET_KEY", GOOD_KEY)]).unwrap();
        assert_eq!(
            s.database.url.expose_secret(),
            "postgres://postgres:pw@db:5432/postgres"
        );
        assert_eq!(s.redis_url.expose_secret(), "redis://redis:6379/0");
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(!s.debug);
    }

    #[test]
    fn database_url_wins_over_components() {
        let s = settings(&[
            ("DATABASE_URL", "postgres://u:p@h:1/d"),
            ("POSTGRES_HOST", "ignored"),
            ("SECRET_KEY", GOOD_KEY),
        ])
        .unwrap();
        assert_eq!(s.database.url.expose_secret(), "postgres://u:p@h:1/d");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = settings(&[
            ("DEBUG", "maybe"),
            ("LISTEN_ADDR", "nowhere"),
            ("SECRET_KEY", "x"),
            ("SECRET_KEY_FILE", "/nonexistent"),
            ("POSTGRES_PASSWORD_FILE", "/nonexistent/pw"),
            ("WORKER_CONCURRENCY", "0"),
        ])
        .unwrap_err();
        let all = err.problems.join("\n");
        assert!(all.contains("DEBUG"), "{all}");
        assert!(all.contains("LISTEN_ADDR"), "{all}");
        assert!(all.contains("SECRET_KEY and SECRET_KEY_FILE"), "{all}");
        assert!(all.contains("POSTGRES_PASSWORD_FILE: cannot read"), "{all}");
        assert!(all.contains("WORKER_CONCURRENCY"), "{all}");
        assert_eq!(err.problems.len(), 5, "{all}");
    }

    #[test]
    fn development_key_is_refused_without_debug() {
        let err = settings(&[
            ("POSTGRES_PASSWORD", "pw"),
            ("SECRET_KEY", DEVELOPMENT_SECRET_KEY),
        ])
        .unwrap_err();
        assert!(err.problems[0].contains("development key"));
        let ok = settings(&[("POSTGRES_PASSWORD", "pw"), ("DEBUG", "true")]).unwrap();
        assert_eq!(ok.secret_key.expose_secret(), DEVELOPMENT_SECRET_KEY);
        assert_eq!(ok.log_format, LogFormat::Pretty);
    }

    #[test]
    fn secrets_never_appear_in_debug_or_problems() {
        let s = settings(&[
            ("POSTGRES_PASSWORD", "hunter2-pg"),
            ("SECRET_KEY", GOOD_KEY),
            ("REDIS_PASSWORD", "hunter2-redis"),
        ])
        .unwrap();
        let debug = format!("{s:?} {:?}", s.redacted());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(GOOD_KEY), "{debug}");
        let err = settings(&[
            ("DATABASE_URL", "not a url hunter2"),
            ("SECRET_KEY", "short-hunter2"),
        ])
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn redis_password_is_put_into_the_url() {
        let s = settings(&[
            ("POSTGRES_PASSWORD", "pw"),
            ("SECRET_KEY", GOOD_KEY),
            ("REDIS_PASSWORD", "p@ss word"),
        ])
        .unwrap();
        assert_eq!(
            s.redis_url.expose_secret(),
            "redis://:p%40ss%20word@redis:6379/0"
        );
    }

    #[test]
    fn allowed_hosts_match_like_django() {
        let hosts = AllowedHosts::new(vec![
            "example.com".into(),
            ".sub.org".into(),
            "[::1]".into(),
        ]);
        assert!(hosts.allows("example.com"));
        assert!(hosts.allows("EXAMPLE.com:8000"));
        assert!(hosts.allows("a.sub.org"));
        assert!(hosts.allows("sub.org"));
        assert!(hosts.allows("[::1]:8000"));
        assert!(!hosts.allows("evil.com"));
        assert!(!hosts.allows("notsub.org"));
        assert!(!hosts.allows(""));
        assert!(AllowedHosts::new(vec!["*".into()]).allows("anything"));
    }
}
