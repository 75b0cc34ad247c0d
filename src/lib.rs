//! The Django Docker Sample, in Rust: a web app, its tasks worker and the operational commands, as a library
//! behind the thin `app` binary. The layers below the web (settings, database, tasks, metrics, logging) are the
//! `app-core` crate in core/, re-exported here under the same names.

pub use app_core::{assets, config, db, log_writer, metrics, shutdown, tasks, telemetry};

pub mod cli;
pub mod commands;
pub mod http;
pub mod startup;
