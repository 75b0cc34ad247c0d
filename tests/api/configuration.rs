//! What the commands that load the configuration do with a bad or a good one: every problem listed and exit 2, or
//! the configuration printed with its secrets redacted; secrets from `NAME_FILE`.

use std::time::Duration;

use crate::child::{KEY_SECRET, PG_SECRET, REDIS_SECRET, assert_no_secret, run, vars_of};
use crate::helpers::TestConfig;

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
    finished.assert_stdout_has(&["postgres://app@db:5432/app?password=***&sslmode=disable"]);
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
    finished.assert_stdout_has(&[
        "postgres://postgres:***@db:5432/postgres",
        "redis://:***@redis:6379/0",
    ]);
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
    finished.assert_stderr_has(&[
        "SECRET_KEY: the development key must not be used",
        "POSTGRES_PASSWORD_FILE: file",
    ]);

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
