//! Where PostgreSQL and Redis are: `DATABASE_URL` or the `POSTGRES_*` parts (the official image's names, so one
//! env file feeds both), and `REDIS_URL` with an optional `REDIS_PASSWORD` put into it.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

use super::env::Env;

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    /// `POSTGRES_PASSWORD_PREVIOUS`: the password before a rotation, tried when PostgreSQL refuses the one in `url`
    /// (`db::Db`).
    pub previous_password: Option<SecretString>,
    pub pool_size: u32,
    /// `DB_READERS`: connections kept apart from the pool for the hot reads (`db::Db::read`).
    pub readers: u32,
    pub acquire_timeout: Duration,
}

pub(super) fn database_settings(env: &mut Env<'_>) -> DatabaseSettings {
    let pool_size = env.positive("DB_POOL_SIZE", 10);
    let readers = env.positive("DB_READERS", 4);
    let acquire_timeout = env.millis("DB_ACQUIRE_TIMEOUT_MS", Duration::from_millis(2000));
    let explicit_url = env.secret("DATABASE_URL");
    let host = env.string("POSTGRES_HOST").unwrap_or_else(|| "db".into());
    let port: u16 = env.parse("POSTGRES_PORT", 5432);
    let user = env
        .string("POSTGRES_USER")
        .unwrap_or_else(|| "postgres".into());
    let db = env.string("POSTGRES_DB").unwrap_or_else(|| user.clone());
    let password = env.secret("POSTGRES_PASSWORD");
    let previous_password = env.secret("POSTGRES_PASSWORD_PREVIOUS");
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
        previous_password,
        pool_size,
        readers,
        acquire_timeout,
    }
}

pub(super) fn redis_url(env: &mut Env<'_>) -> SecretString {
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
