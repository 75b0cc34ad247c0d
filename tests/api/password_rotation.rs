//! The PostgreSQL password replaced under a running process (`scripts/swarm.sh rotate-db-password`): a process
//! given the new password and the one before it (`POSTGRES_PASSWORD_PREVIOUS`) opens connections before, during and
//! after `ALTER ROLE … PASSWORD`, whichever of the two is in force. Without the previous one, the first connection
//! opened after the change is refused: that is what a rotation did to the replicas still running the old secret.

use sqlx::{Connection, PgConnection};

use crate::helpers::{TestConfig, create_database};
use crate::servers::TestPostgres;

const ROLE: &str = "rotated";

/// A server of its own that checks passwords, and a migrated database that role `ROLE` logs in to with `password`.
async fn postgres_with_role(password: &str) -> (TestPostgres, PgConnection, String) {
    let pg = TestPostgres::start();
    pg.require_passwords();
    let mut admin = PgConnection::connect(&pg.admin_url())
        .await
        .expect("connect as admin");
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut admin)
        .await
        .expect("reload");
    set_password(
        &mut admin,
        &format!("CREATE ROLE {ROLE} LOGIN SUPERUSER"),
        password,
    )
    .await;
    let database = create_database(&pg.admin_url(), true).await;
    (pg, admin, database)
}

async fn set_password(admin: &mut PgConnection, statement: &str, password: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "{statement} PASSWORD '{password}'"
    )))
    .execute(admin)
    .await
    .expect("set the role's password");
}

/// Settings that log in as `ROLE` with `password`, and `previous` as POSTGRES_PASSWORD_PREVIOUS when given.
fn settings(
    port: u16,
    database: &str,
    password: &str,
    previous: Option<&str>,
) -> app::config::Settings {
    let db_name = url::Url::parse(database)
        .expect("database URL")
        .path()
        .trim_start_matches('/')
        .to_string();
    let redis = crate::servers::shared().redis_url.clone();
    let mut config = TestConfig::with_servers(String::new(), redis)
        .set("POSTGRES_HOST", "127.0.0.1")
        .set("POSTGRES_PORT", port.to_string())
        .set("POSTGRES_USER", ROLE)
        .set("POSTGRES_DB", db_name)
        .set("POSTGRES_PASSWORD", password)
        .set("DB_POOL_SIZE", "8");
    config.vars.remove("DATABASE_URL");
    if let Some(previous) = previous {
        config = config.set("POSTGRES_PASSWORD_PREVIOUS", previous);
    }
    config.settings()
}

async fn select_one(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT 1")
        .fetch_one(conn)
        .await
        .expect("SELECT 1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_before_during_and_after_a_password_change() {
    let (pg, mut admin, database) = postgres_with_role("old-password").await;
    // A replica started by the rotation: the new password first, which PostgreSQL does not take yet.
    let rotated = app::db::pool(&settings(
        pg.port,
        &database,
        "new-password",
        Some("old-password"),
    ));
    // A replica that runs the old secret only.
    let old_only = app::db::pool(&settings(pg.port, &database, "old-password", None));
    let mut before = rotated
        .acquire()
        .await
        .expect("a connection before the change (previous password)");
    let mut old_before = old_only
        .acquire()
        .await
        .expect("the old replica's connection before the change");

    set_password(&mut admin, &format!("ALTER ROLE {ROLE}"), "new-password").await;

    // Connections open stay valid; new ones are opened while those are held, several at once.
    assert_eq!(select_one(&mut before).await, 1);
    assert_eq!(select_one(&mut old_before).await, 1);
    let (a, b, c, d) = tokio::join!(
        rotated.acquire(),
        rotated.acquire(),
        rotated.acquire(),
        rotated.acquire()
    );
    for conn in [a, b, c, d] {
        let mut conn = conn.expect("a connection opened after the change (new password)");
        assert_eq!(select_one(&mut conn).await, 1);
    }
    let refused = old_only
        .acquire()
        .await
        .expect_err("the old password is refused after the change");
    assert!(app::db::is_invalid_password(&refused), "{refused}");

    // The backup service's commands take either password too.
    let dir = tempfile::tempdir().expect("temp dir");
    let (old_file, new_file) = (dir.path().join("old"), dir.path().join("new"));
    std::fs::write(&old_file, "old-password\n").expect("write");
    std::fs::write(&new_file, "new-password\n").expect("write");
    let url = format!(
        "postgres://{ROLE}@127.0.0.1:{}{}",
        pg.port,
        url::Url::parse(&database).expect("URL").path()
    );
    let counts = |previous: Option<&std::path::Path>| {
        let mut env = vec![(
            "POSTGRES_PASSWORD_FILE",
            old_file.to_str().expect("UTF-8 path"),
        )];
        env.extend(previous.map(|p| {
            (
                "POSTGRES_PASSWORD_PREVIOUS_FILE",
                p.to_str().expect("UTF-8 path"),
            )
        }));
        let db_name = url::Url::parse(&database)
            .expect("URL")
            .path()
            .trim_start_matches('/')
            .to_string();
        crate::backup::script(&url, dir.path(), &["counts", &db_name], &env)
    };
    let with_previous = counts(Some(&new_file));
    assert!(
        with_previous.status.success(),
        "{}",
        String::from_utf8_lossy(&with_previous.stderr)
    );
    let without = counts(None);
    assert!(
        !without.status.success(),
        "the old password alone is refused by the backup service too"
    );

    // The command `app wait` runs before serving takes either password.
    let waited = app::commands::wait::wait_for_dependencies(&settings(
        pg.port,
        &database,
        "old-password",
        Some("new-password"),
    ))
    .await;
    assert!(waited.is_ok(), "{waited:?}");
    drop((before, old_before));
    rotated.close().await;
    old_only.close().await;
}
