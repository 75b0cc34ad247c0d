//! backup/service.sh against real PostgreSQL, with this machine's pg_dump/pg_restore: a backup taken while writes
//! continue restores to a consistent snapshot, damaged files are refused without changing anything, retention
//! keeps exactly what its rule keeps, and `/readyz` and the metrics show the last success and the service's own
//! report (`backup_status`).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::helpers::{
    TestApp, TestConfig, create_database, database_url, eventually, spawn_app_with,
};
use crate::servers;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/backup/service.sh");

/// The directory holding pg_dump, pg_restore and psql: PATH first, then Debian's newest /usr/lib/postgresql/N/bin.
fn pg_client_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    debian.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    on_path
        .chain(debian.into_iter().rev())
        .find(|d| {
            ["pg_dump", "pg_restore", "psql"]
                .iter()
                .all(|b| d.join(b).is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "pg_dump, pg_restore and psql not found: install the PostgreSQL client \
                 (Debian/Ubuntu: `apt-get install postgresql-client`; Nix: `nix develop`)"
            )
        })
}

/// backup/service.sh with the PG* variables of `database_url` and backups in `root`.
pub fn script(database_url: &str, root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let url = url::Url::parse(database_url).expect("database URL parses");
    let path = format!(
        "{}:{}",
        pg_client_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.arg(SCRIPT)
        .args(args)
        .env("PATH", path)
        .env("PGHOST", url.host_str().expect("host"))
        .env("PGPORT", url.port().unwrap_or(5432).to_string())
        .env("PGUSER", url.username())
        .env("PGPASSWORD", url.password().unwrap_or(""))
        .env("PGDATABASE", url.path().trim_start_matches('/'))
        .env("BACKUP_ROOT", root)
        .env("APP_VERSION", "0.0.0-test")
        // The dump's behaviour alone: a base backup would copy the whole shared test server (the e2e backup phase
        // covers WAL streaming and point-in-time recovery, in the containers they run in).
        .env("BACKUP_WAL", "off")
        .env("TMPDIR", root);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("sh runs backup/service.sh")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `service.sh now`, which must succeed.
fn backup_now(database_url: &str, root: &Path) {
    let out = script(database_url, root, &["now"], &[]);
    assert!(
        out.status.success(),
        "service.sh now failed: {}",
        stderr(&out)
    );
}

fn the_only_backup(root: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(root)
        .expect("backup dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dump"))
        .collect();
    assert_eq!(files.len(), 1, "one backup expected: {files:?}");
    files.into_iter().next().expect("one file")
}

/// Row count and md5 of the `tasks` rows whose seq (payload) is at most `up_to`, in seq order.
async fn checksum(pool: &PgPool, up_to: i64) -> (i64, String) {
    sqlx::query_as(
        "SELECT count(*), md5(coalesce(string_agg(id::text || kind || payload::text || state, ',' \
         ORDER BY (payload->>'seq')::bigint), '')) FROM tasks WHERE (payload->>'seq')::bigint <= $1",
    )
    .bind(up_to)
    .fetch_one(pool)
    .await
    .expect("checksum query")
}

async fn insert_task(pool: &PgPool, seq: i64) {
    sqlx::query(
        "INSERT INTO tasks (id, kind, payload, max_attempts) VALUES (gen_random_uuid(), 'wordcount', \
         jsonb_build_object('seq', $1::bigint, 'text', repeat('x', 200)), 3)",
    )
    .bind(seq)
    .execute(pool)
    .await
    .expect("insert a task");
}

async fn database_exists(admin_url: &str, name: &str) -> bool {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .expect("connect admin");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .expect("pg_database")
}

fn scratch_name() -> String {
    format!("scratch_{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn a_backup_taken_while_writes_continue_restores_a_consistent_snapshot() {
    let admin = servers::shared().postgres_admin_url.clone();
    let url = create_database(&admin, true).await;
    let pool = PgPool::connect(&url).await.expect("connect");
    let before = 2000;
    for seq in 1..=before {
        insert_task(&pool, seq).await;
    }

    // One writer, one row per transaction, seq increasing: a consistent snapshot holds exactly seq 1..=k.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicI64::new(before));
    let writer = {
        let (pool, stop, written) = (pool.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let seq = written.load(Ordering::Relaxed) + 1;
                insert_task(&pool, seq).await;
                written.store(seq, Ordering::Relaxed);
            }
        })
    };
    // The writer is running before the dump starts ...
    eventually("the writer writes", Duration::from_secs(30), || {
        let n = written.load(Ordering::Relaxed);
        async move { if n > before + 20 { Ok(()) } else { Err(n) } }
    })
    .await;
    let root = tempfile::tempdir().expect("temp dir");
    let (url2, dir) = (url.clone(), root.path().to_path_buf());
    let out = tokio::task::spawn_blocking(move || script(&url2, &dir, &["now"], &[]))
        .await
        .expect("backup ran");
    let at_dump_end = written.load(Ordering::Relaxed);
    // ... and after it ended.
    eventually("the writer goes on", Duration::from_secs(30), || {
        let n = written.load(Ordering::Relaxed);
        async move { if n > at_dump_end + 20 { Ok(()) } else { Err(n) } }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer");
    assert!(
        out.status.success(),
        "service.sh now failed: {}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("wrote backup-"), "{}", stdout(&out));
    let file = the_only_backup(root.path());

    let scratch = scratch_name();
    let out = script(
        &url,
        root.path(),
        &["restore-into", file.to_str().expect("utf-8"), &scratch],
        &[],
    );
    assert!(
        out.status.success(),
        "restore-into failed: {}",
        stderr(&out)
    );
    let restored = PgPool::connect(&database_url(&admin, &scratch))
        .await
        .expect("connect scratch");
    let (max_seq, gaps): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(max((payload->>'seq')::bigint), 0), \
         coalesce(max((payload->>'seq')::bigint), 0) - count(*) FROM tasks",
    )
    .fetch_one(&restored)
    .await
    .expect("restored tasks");
    assert!(
        max_seq >= before,
        "rows written before the backup are missing: max seq {max_seq}"
    );
    assert_eq!(
        gaps, 0,
        "the snapshot is not consistent: seq 1..={max_seq} has {gaps} missing"
    );
    let live_total: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert!(
        live_total > max_seq,
        "writes went on after the snapshot: live {live_total}, snapshot {max_seq}"
    );
    assert_eq!(
        checksum(&restored, max_seq).await,
        checksum(&pool, max_seq).await,
        "the restored rows differ from the live rows that existed at the snapshot"
    );
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&restored)
        .await
        .expect("the migration history is restored too");
    assert!(migrations > 0);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM backup_runs WHERE file = $1")
        .bind(file.file_name().and_then(|n| n.to_str()).expect("name"))
        .fetch_one(&pool)
        .await
        .expect("backup_runs");
    assert_eq!(runs, 1, "the success is recorded in the live database");
    restored.close().await;
}

#[tokio::test]
async fn damaged_or_foreign_files_are_refused_and_nothing_changes() {
    let admin = servers::shared().postgres_admin_url.clone();
    let url = create_database(&admin, true).await;
    let pool = PgPool::connect(&url).await.expect("connect");
    for seq in 1..=500 {
        insert_task(&pool, seq).await;
    }
    let root = tempfile::tempdir().expect("temp dir");
    backup_now(&url, root.path());
    assert!(
        !root.path().join("backup.lock").exists(),
        "the lock is released after a backup"
    );
    let good = std::fs::read(the_only_backup(root.path())).expect("read backup");
    let live_before = checksum(&pool, i64::MAX).await;

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    for b in &mut corrupt[middle..middle + 64] {
        *b = !*b;
    }
    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "truncated",
            good[..good.len() * 2 / 3].to_vec(),
            "damaged or truncated",
        ),
        ("corrupt", corrupt, ""),
        (
            "not-a-dump",
            b"SELECT 1;\n".to_vec(),
            "not a PostgreSQL custom-format dump",
        ),
        ("empty", Vec::new(), "is empty"),
    ];
    let other = tempfile::tempdir().expect("temp dir");
    for (label, bytes, says) in cases {
        let path = other.path().join(format!("{label}.dump"));
        std::fs::write(&path, bytes).expect("write case");
        let p = path.to_str().expect("utf-8");
        for args in [
            vec!["verify-file", p],
            vec!["restore-into", p, "will_not_exist"],
        ] {
            let out = script(&url, root.path(), &args, &[]);
            let err = stderr(&out);
            assert!(!out.status.success(), "{label}: {args:?} accepted it");
            assert_eq!(err.lines().count(), 1, "{label}: one line expected: {err}");
            assert!(
                err.starts_with("backup: ERROR: ") && err.contains(says),
                "{label}: {err}"
            );
        }
        assert!(
            !database_exists(&admin, "will_not_exist").await,
            "{label}: a database was left"
        );
    }
    let out = script(
        &url,
        root.path(),
        &["verify-file", "/nonexistent/backup.dump"],
        &[],
    );
    assert!(
        !out.status.success() && stderr(&out).contains("no such backup"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        checksum(&pool, i64::MAX).await,
        live_before,
        "the live data changed"
    );
}

/// Every 12 hours from 1 October to 3 December 2026, 12:00 UTC; now is Thursday 3 December, 18:00.
/// `service.sh prune` with BACKUP_KEEP=7d4w as if it were 3 December 2026, 18:00 UTC.
fn prune_on_3_december(url: &str, root: &Path, env: &[(&str, &str)]) -> Output {
    let now = script(url, root, &["epoch", "backup-20261203T180000Z-x.dump"], &[]);
    let now = stdout(&now).trim().to_string();
    let mut env = env.to_vec();
    env.extend([("BACKUP_NOW", now.as_str()), ("BACKUP_KEEP", "7d4w")]);
    script(url, root, &["prune"], &env)
}

#[test]
fn retention_with_a_fixed_now_keeps_exactly_what_the_rule_keeps() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut all = Vec::new();
    for month_days in [(10, 31), (11, 30), (12, 3)] {
        for day in 1..=month_days.1 {
            for hour in [0, 12] {
                all.push(format!(
                    "backup-2026{:02}{day:02}T{hour:02}0000Z-0.1.0.dump",
                    month_days.0
                ));
            }
        }
    }
    for name in all.iter().chain(["notes.txt".to_string()].iter()) {
        std::fs::write(root.path().join(name), b"x").expect("write file");
    }
    let out = prune_on_3_december("postgres://u@127.0.0.1/x", root.path(), &[]);
    assert!(out.status.success(), "prune failed: {}", stderr(&out));
    let mut left: Vec<String> = std::fs::read_dir(root.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    // 7 days: the newest of 27 Nov .. 3 Dec; 4 ISO weeks (from Monday 9 Nov): the newest of the weeks of 9 and
    // 16 Nov are added (the later two weeks' newest are daily ones already); the unknown file stays.
    let expected: Vec<String> = [
        "backup-20261115T120000Z-0.1.0.dump",
        "backup-20261122T120000Z-0.1.0.dump",
        "backup-20261127T120000Z-0.1.0.dump",
        "backup-20261128T120000Z-0.1.0.dump",
        "backup-20261129T120000Z-0.1.0.dump",
        "backup-20261130T120000Z-0.1.0.dump",
        "backup-20261201T120000Z-0.1.0.dump",
        "backup-20261202T120000Z-0.1.0.dump",
        "backup-20261203T120000Z-0.1.0.dump",
        "notes.txt",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(left, expected);
}

/// Base backups keep each day's and week's *first* (the WAL after it covers the rest of the day) and the newest;
/// WAL before an archive's oldest kept base backup goes, the rest stays; an archive left without a base backup goes.
#[test]
fn base_backup_retention_keeps_each_days_first_and_the_wal_from_the_oldest_kept_one() {
    let root = tempfile::tempdir().expect("temp dir");
    let pitr = root.path().join("pitr");
    let base = |archive: &str, name: &str, start_wal: &str| {
        let dir = pitr.join(archive).join(name);
        std::fs::create_dir_all(&dir).expect("base dir");
        std::fs::write(dir.join("done"), b"0").expect("done");
        std::fs::write(dir.join("start_wal"), start_wal).expect("start_wal");
    };
    for (archive, name, start_wal) in [
        (
            "1111",
            "base-20261010T100000Z-v",
            "000000010000000000000002",
        ),
        (
            "1111",
            "base-20261201T100000Z-v",
            "000000010000000000000010",
        ),
        (
            "1111",
            "base-20261201T200000Z-v",
            "000000010000000000000018",
        ),
        (
            "1111",
            "base-20261203T100000Z-v",
            "000000010000000000000030",
        ),
        (
            "2222",
            "base-20261001T000000Z-v",
            "000000010000000000000002",
        ),
    ] {
        base(archive, name, start_wal);
    }
    let wal = |archive: &str, files: &[&str]| {
        let dir = pitr.join(archive).join("wal");
        std::fs::create_dir_all(&dir).expect("wal dir");
        for f in files {
            std::fs::write(dir.join(f), b"x").expect("segment");
        }
    };
    wal(
        "1111",
        &[
            "000000010000000000000005.gz",
            "00000001000000000000000F.gz",
            "000000010000000000000010.gz",
            "000000010000000000000020.gz",
            "000000010000000000000031.partial",
            "00000002.history",
        ],
    );
    wal("2222", &["000000010000000000000003.gz"]);
    wal("3333", &[]);
    // No PostgreSQL at that address: no archive is the running one.
    let out = prune_on_3_december(
        "postgres://u@127.0.0.1:9/x",
        root.path(),
        &[("BACKUP_WAL", "on")],
    );
    assert!(out.status.success(), "prune failed: {}", stderr(&out));
    let list = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    assert_eq!(list(&pitr), ["1111"], "{}", stdout(&out));
    assert_eq!(
        list(&pitr.join("1111")),
        ["base-20261201T100000Z-v", "base-20261203T100000Z-v", "wal"]
    );
    assert_eq!(
        list(&pitr.join("1111").join("wal")),
        [
            "000000010000000000000010.gz",
            "000000010000000000000020.gz",
            "000000010000000000000031.partial",
            "00000002.history",
        ]
    );
}

#[test]
fn file_name_times_match_gnu_date_and_the_healthcheck_follows_the_schedule() {
    let root = tempfile::tempdir().expect("temp dir");
    let url = "postgres://u@127.0.0.1/x";
    for (name, iso) in [
        ("backup-19700101T000000Z-v.dump", "1970-01-01T00:00:00Z"),
        ("backup-20280229T235959Z-v.dump", "2028-02-29T23:59:59Z"),
        ("backup-20261231T080809Z-v.dump", "2026-12-31T08:08:09Z"),
        ("backup-21000301T000000Z-v.dump", "2100-03-01T00:00:00Z"),
    ] {
        let ours = stdout(&script(url, root.path(), &["epoch", name], &[]));
        let gnu = std::process::Command::new("date")
            .args(["-u", "-d", iso, "+%s"])
            .output()
            .expect("GNU date runs");
        assert_eq!(
            ours.trim(),
            String::from_utf8_lossy(&gnu.stdout).trim(),
            "{name}"
        );
    }
    let name = "backup-20261203T120000Z-0.1.0.dump";
    let out = script(url, root.path(), &["check"], &[]);
    assert!(
        !out.status.success() && stderr(&out).contains("no backup yet"),
        "{}",
        stderr(&out)
    );
    std::fs::write(root.path().join(name), b"x").expect("write");
    let at = stdout(&script(url, root.path(), &["epoch", name], &[]))
        .trim()
        .parse::<i64>()
        .expect("epoch");
    // Daily: healthy up to 1.5 days old, unhealthy after.
    let limit = at + 86400 * 3 / 2;
    let ok = script(
        url,
        root.path(),
        &["check"],
        &[("BACKUP_NOW", &limit.to_string())],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let late = script(
        url,
        root.path(),
        &["check"],
        &[("BACKUP_NOW", &(limit + 1).to_string())],
    );
    assert!(
        !late.status.success() && stderr(&late).contains("129601s old"),
        "{}",
        stderr(&late)
    );
    let hourly = script(
        url,
        root.path(),
        &["check"],
        &[
            ("BACKUP_NOW", &(at + 5401).to_string()),
            ("BACKUP_SCHEDULE", "hourly"),
        ],
    );
    assert!(!hourly.status.success(), "hourly: 5401 s is too old");
    let bad = script(
        url,
        root.path(),
        &["check"],
        &[("BACKUP_SCHEDULE", "weekly-ish")],
    );
    assert!(
        !bad.status.success() && stderr(&bad).contains("BACKUP_SCHEDULE"),
        "{}",
        stderr(&bad)
    );
}

#[tokio::test]
async fn readyz_and_the_metrics_show_the_last_successful_backup() {
    let config = TestConfig::new().await;
    let url = config.vars["DATABASE_URL"].clone();
    let app = spawn_app_with(config).await;
    let body: Value = app.get("/readyz").await.json().await.expect("json");
    assert_eq!(body["backup"]["last_success_unix"], Value::Null, "{body}");

    let root = tempfile::tempdir().expect("temp dir");
    backup_now(&url, root.path());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let (_, body, metrics) = readyz_and_metrics(&app).await;
    let at = body["backup"]["last_success_unix"]
        .as_f64()
        .unwrap_or_else(|| panic!("{body}"));
    assert!((now - at).abs() < 60.0, "last success {at}, now {now}");
    assert_eq!(body["status"], "ready");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("backup_last_success_timestamp_seconds ")),
        "{metrics}"
    );
}

/// The app's `/readyz` and then its `/metrics` text, read right after so the gauges are the ones this call set (the
/// recorder is shared by every app of the test binary).
async fn readyz_and_metrics(app: &TestApp) -> (u16, Value, String) {
    let response = app.get("/readyz").await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("json");
    let metrics = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    (status, body, metrics)
}

#[tokio::test]
async fn readyz_and_the_metrics_show_the_backup_services_report_without_failing_readiness() {
    let config = TestConfig::new().await;
    let url = config.vars["DATABASE_URL"].clone();
    let app = spawn_app_with(config).await;
    let pool = PgPool::connect(&url).await.expect("connect");

    // No report yet (the backup service never ran, as in dev): unknown, not unhealthy.
    let (status, body, _) = readyz_and_metrics(&app).await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
    let backup = &body["backup"];
    for field in [
        "ok",
        "problem",
        "wal_lag_seconds",
        "max_lag_seconds",
        "offsite",
        "offsite_ok_unix",
        "checked_unix",
    ] {
        assert_eq!(backup[field], Value::Null, "{field}: {body}");
    }
    assert!(backup.get("error").is_none(), "{body}");

    // A healthy report.
    sqlx::query(
        "INSERT INTO backup_status (wal_lag_seconds, max_lag_seconds, offsite, offsite_ok_at) \
         VALUES (0.2, 5, 'ok', now())",
    )
    .execute(&pool)
    .await
    .expect("insert the report");
    let (status, body, metrics) = readyz_and_metrics(&app).await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
    let backup = &body["backup"];
    assert_eq!(backup["ok"], true, "{body}");
    assert_eq!(backup["problem"], Value::Null, "{body}");
    assert_eq!(backup["wal_lag_seconds"], 0.2, "{body}");
    assert_eq!(backup["max_lag_seconds"], 5.0, "{body}");
    assert_eq!(backup["offsite"], "ok", "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for field in ["offsite_ok_unix", "checked_unix"] {
        let at = backup[field].as_f64().unwrap_or_else(|| panic!("{body}"));
        assert!((now - at).abs() < 60.0, "{field} {at}, now {now}");
    }
    assert!(
        metrics.lines().any(|l| l == "backup_healthy 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("backup_wal_lag_seconds ")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("backup_offsite_ok_timestamp_seconds ")),
        "{metrics}"
    );

    // The service names a problem: shown, yet the app stays ready (a backup problem is not the app's outage).
    let problem = "WAL streaming is 12 s behind (BACKUP_MAX_LAG 5 s)";
    sqlx::query(
        "UPDATE backup_status SET wal_lag_seconds = 12, problem = $1, offsite = 'failing', \
         checked_at = now()",
    )
    .bind(problem)
    .execute(&pool)
    .await
    .expect("update the report");
    let (status, body, metrics) = readyz_and_metrics(&app).await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
    let backup = &body["backup"];
    assert_eq!(backup["ok"], false, "{body}");
    assert_eq!(backup["problem"], problem, "{body}");
    assert_eq!(backup["offsite"], "failing", "{body}");
    assert!(
        metrics.lines().any(|l| l == "backup_healthy 0"),
        "{metrics}"
    );

    // The service stopped reporting: whatever its last row said, that is a problem of its own.
    sqlx::query(
        "UPDATE backup_status SET problem = NULL, offsite = 'ok', \
         checked_at = now() - interval '10 minutes'",
    )
    .execute(&pool)
    .await
    .expect("age the report");
    let (status, body, metrics) = readyz_and_metrics(&app).await;
    assert_eq!((status, &body["status"]), (200, &"ready".into()), "{body}");
    let backup = &body["backup"];
    assert_eq!(backup["ok"], false, "{body}");
    let problem = backup["problem"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    assert!(
        problem.starts_with("the backup service has not reported for "),
        "{body}"
    );
    assert!(
        metrics.lines().any(|l| l == "backup_healthy 0"),
        "{metrics}"
    );
    pool.close().await;
}
