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
        ("LOG_PROBES", "sometimes"),
    ])
    .unwrap_err();
    let all = err.problems.join("\n");
    assert!(all.contains("DEBUG"), "{all}");
    assert!(all.contains("LISTEN_ADDR"), "{all}");
    assert!(all.contains("SECRET_KEY and SECRET_KEY_FILE"), "{all}");
    assert!(all.contains("POSTGRES_PASSWORD_FILE: cannot read"), "{all}");
    assert!(all.contains("WORKER_CONCURRENCY"), "{all}");
    assert!(all.contains("LOG_PROBES"), "{all}");
    assert_eq!(err.problems.len(), 6, "{all}");
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
        ("POSTGRES_PASSWORD_PREVIOUS", "hunter2-previous"),
    ])
    .unwrap();
    let debug = format!("{s:?}");
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
fn the_backlog_bound_and_the_api_token_are_validated_with_the_rest() {
    let base = [("POSTGRES_PASSWORD", "pw"), ("SECRET_KEY", GOOD_KEY)];
    let s = settings(&base).unwrap();
    assert_eq!(s.tasks.max_backlog, 10_000);
    assert!(s.api_token.is_none(), "the API is public by default");
    let s = settings(&[base[0], base[1], ("QUEUE_MAX_BACKLOG", "0")]).unwrap();
    assert_eq!(s.tasks.max_backlog, 0);
    let s = settings(&[base[0], base[1], ("API_TOKEN", "0123456789abcdef")]).unwrap();
    assert!(!format!("{s:?}").contains("0123456789abcdef"));

    let err = settings(&[
        base[0],
        base[1],
        ("QUEUE_MAX_BACKLOG", "-1"),
        ("API_TOKEN", "short-hunter2"),
        ("LISTEN_ADDR", "nowhere"),
    ])
    .unwrap_err();
    let all = err.problems.join("\n");
    assert!(
        all.contains("QUEUE_MAX_BACKLOG: cannot parse `-1`"),
        "{all}"
    );
    assert!(all.contains("API_TOKEN: must be at least 16"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
    assert_eq!(err.problems.len(), 3, "{all}");
    let err = settings(&[base[0], base[1], ("API_TOKEN", "0123456789 abcdef")]).unwrap_err();
    assert!(err.problems[0].contains("no spaces"), "{err}");
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
fn the_previous_password_is_a_second_login_to_the_same_database() {
    let one = settings(&[("POSTGRES_PASSWORD", "now"), ("SECRET_KEY", GOOD_KEY)]).unwrap();
    assert_eq!(one.pg_logins().len(), 1);
    for url_or_parts in [
        &[
            ("POSTGRES_PASSWORD", "now"),
            ("POSTGRES_HOST", "pg.internal"),
        ][..],
        &[("DATABASE_URL", "postgres://u:now@pg.internal:5432/d")][..],
    ] {
        let mut vars = vec![
            ("POSTGRES_PASSWORD_PREVIOUS", "before"),
            ("SECRET_KEY", GOOD_KEY),
        ];
        vars.extend_from_slice(url_or_parts);
        let logins = settings(&vars).unwrap().pg_logins();
        assert_eq!(logins.len(), 2);
        assert_eq!(logins[1].get_host(), "pg.internal");
        assert_eq!(logins[0].get_username(), logins[1].get_username());
        assert_eq!(logins[0].get_database(), logins[1].get_database());
    }
}
