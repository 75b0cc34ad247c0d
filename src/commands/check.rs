//! `app check`: the loaded configuration, printed with every secret redacted.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::Settings;

/// Prints the settings, one `name value` line each.
pub fn run(settings: &Settings) {
    println!("configuration is valid:");
    for (name, value) in redacted(settings) {
        println!("  {name:<20} {value}");
    }
}

/// `(name, value)` pairs, secrets redacted.
pub fn redacted(settings: &Settings) -> Vec<(&'static str, String)> {
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    let millis = |d: Duration| format!("{}ms", d.as_millis());
    let s = settings;
    vec![
        ("database", redact_url(s.database.url.expose_secret())),
        ("db_pool_size", s.database.pool_size.to_string()),
        ("db_readers", s.database.readers.to_string()),
        ("db_acquire_timeout", millis(s.database.acquire_timeout)),
        ("redis", redact_url(s.redis_url.expose_secret())),
        ("secret_key", "[REDACTED]".into()),
        (
            "api_token",
            match s.api_token {
                Some(_) => "[REDACTED]".into(),
                None => "(unset: the API is public)".into(),
            },
        ),
        ("debug", s.debug.to_string()),
        ("allowed_hosts", s.allowed_hosts.join(",")),
        ("listen_addr", s.listen_addr.to_string()),
        ("metrics_addr", s.metrics_addr.to_string()),
        ("wait_timeout", secs(s.wait_timeout)),
        ("shutdown_timeout", secs(s.shutdown_timeout)),
        ("shutdown_delay", secs(s.shutdown_delay)),
        ("migrate_on_start", s.migrate_on_start.to_string()),
        (
            "static_dir",
            s.static_dir
                .as_ref()
                .map_or("(embedded)".into(), |p| p.display().to_string()),
        ),
        (
            "template_dir",
            s.template_dir
                .as_ref()
                .map_or("(embedded)".into(), |p| p.display().to_string()),
        ),
        ("max_body_bytes", s.max_body_bytes.to_string()),
        ("request_timeout", secs(s.request_timeout)),
        ("log_format", format!("{:?}", s.log_format).to_lowercase()),
        ("log_probes", s.log_probes.to_string()),
        ("queue_name", s.tasks.name.clone()),
        ("worker_concurrency", s.tasks.concurrency.to_string()),
        ("task_max_attempts", s.tasks.max_attempts.to_string()),
        ("task_retry_base", millis(s.tasks.retry_base)),
        ("task_claim_idle", millis(s.tasks.claim_idle)),
        ("task_timeout", secs(s.tasks.task_timeout)),
        ("task_retention", secs(s.tasks.retention)),
        ("idempotency_key_ttl", secs(s.tasks.idempotency_ttl)),
        (
            "queue_max_backlog",
            match s.tasks.max_backlog {
                0 => "0 (no bound)".into(),
                n => n.to_string(),
            },
        ),
    ]
}

/// Replaces the password of a URL with `***`, for display, also one given as a query parameter
/// (`?password=…`, which sqlx accepts). Unparsable input is hidden entirely.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "[unparsable, hidden]".into();
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_appear_in_the_redacted_settings() {
        let vars = [
            ("POSTGRES_PASSWORD", "hunter2-pg"),
            ("SECRET_KEY", "0123456789abcdef0123456789abcdef-good"),
            ("REDIS_PASSWORD", "hunter2-redis"),
            ("API_TOKEN", "hunter2-api-token-0123"),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        let settings = Settings::from_lookup(lookup).unwrap();
        let shown = format!("{:?}", redacted(&settings));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
