//! `app migrate`: the embedded migrations applied (the sample's `manage.py migrate`), then exit.

use crate::config::Settings;
use crate::db::{self, NewerMigrations};

/// Applies the migrations the database lacks. With `refuse_newer`, a database that has a migration this version
/// does not know (a backup from a newer version) is an error instead.
pub async fn run(settings: Settings, refuse_newer: bool) -> anyhow::Result<()> {
    let newer = if refuse_newer {
        NewerMigrations::Refuse
    } else {
        NewerMigrations::Keep
    };
    db::migrate(&db::pool(&settings), newer).await?;
    tracing::info!("migrations applied");
    Ok(())
}
