//! The app's layers below the web: settings, the database, the tasks (store, queue, worker), metrics and logging.
//! The `app` crate (the web app, the commands and the binaries) is built on this one and re-exports its modules;
//! nothing here depends on it, so an edit of a handler recompiles `app` alone.

pub mod assets;
pub mod config;
pub mod db;
pub mod log_writer;
pub mod metrics;
pub mod shutdown;
pub mod tasks;
pub mod telemetry;
