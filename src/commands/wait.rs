//! `app wait` (the sample's `wait_entrypoint.py`): PostgreSQL and Redis must answer real protocol requests
//! (`SELECT 1`, `PING`), not just accept TCP, before anything starts.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use sqlx::{Connection, PgConnection};

use crate::config::Settings;
use crate::db;

const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
#[error("gave up after {attempts} attempts in {waited:?}: {last}")]
pub struct WaitError {
    pub attempts: u32,
    pub waited: Duration,
    pub last: String,
}

/// Tries both services with exponential backoff (100 ms doubling to 5 s) until both answer or `WAIT_TIMEOUT`
/// passes. Every attempt is logged with what failed; no secret is logged.
pub async fn wait_for_dependencies(settings: &Settings) -> Result<(), WaitError> {
    let started = Instant::now();
    let deadline = started + settings.wait_timeout;
    let mut delay = FIRST_DELAY;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (postgres, redis) = tokio::join!(check_postgres(settings), check_redis(settings));
        if postgres.is_ok() && redis.is_ok() {
            tracing::info!(
                attempt,
                waited_ms = started.elapsed().as_millis() as u64,
                "PostgreSQL and Redis are ready"
            );
            return Ok(());
        }
        let status = |r: &Result<(), String>| match r {
            Ok(()) => "ready".to_string(),
            Err(e) => e.clone(),
        };
        let (postgres, redis) = (status(&postgres), status(&redis));
        let now = Instant::now();
        if now + delay > deadline {
            tracing::error!(attempt, %postgres, %redis, "dependencies not ready; giving up");
            return Err(WaitError {
                attempts: attempt,
                waited: now - started,
                last: format!("postgres: {postgres}; redis: {redis}"),
            });
        }
        tracing::warn!(attempt, %postgres, %redis, retry_in_ms = delay.as_millis() as u64, "waiting for dependencies");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_DELAY);
    }
}

async fn check_postgres(settings: &Settings) -> Result<(), String> {
    let logins = settings.pg_logins();
    let target = format!("{}:{}", logins[0].get_host(), logins[0].get_port());
    // Each password in turn while PostgreSQL refuses it: during a rotation (`POSTGRES_PASSWORD_PREVIOUS`), either
    // one may be the one in force.
    let attempt = async {
        let Some((last, earlier)) = logins.split_last() else {
            return Err(sqlx::Error::Configuration("no PostgreSQL login".into()));
        };
        let mut conn = 'connected: {
            for options in earlier {
                match PgConnection::connect_with(options).await {
                    Err(err) if db::is_invalid_password(&err) => continue,
                    connected => break 'connected connected?,
                }
            }
            PgConnection::connect_with(last).await?
        };
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        conn.close().await
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{target}: {}", describe_sqlx(&err))),
        Err(_) => Err(format!("{target}: no answer within {ATTEMPT_TIMEOUT:?}")),
    }
}

async fn check_redis(settings: &Settings) -> Result<(), String> {
    let url = settings.redis_url.expose_secret();
    let target = url::Url::parse(url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or("?"),
                u.port().unwrap_or(6379)
            )
        })
        .unwrap_or_else(|| "redis".into());
    let attempt = async {
        let client = redis::Client::open(url)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok::<_, redis::RedisError>(())
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(format!("{target}: {}", describe_redis(&err))),
        Err(_) => Err(format!("{target}: no answer within {ATTEMPT_TIMEOUT:?}")),
    }
}

/// Error text without anything that could carry a secret (sqlx never prints the password; keep it that way).
fn describe_sqlx(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_string(),
        sqlx::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

fn describe_redis(err: &redis::RedisError) -> String {
    match err.code() {
        Some(code) => format!("server error {code}"),
        None => format!("{:?}", err.kind()),
    }
}
