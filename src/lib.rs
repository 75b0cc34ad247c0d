//! The Django Docker Sample, in Rust: a web app, its tasks worker and the operational commands, as a library
//! behind the thin `app` binary.

pub mod assets;
pub mod check;
pub mod cli;
pub mod collectstatic;
pub mod config;
pub mod csrf;
pub mod db;
pub mod healthcheck;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod state;
pub mod tasks;
pub mod telemetry;
pub mod templates;
pub mod wait;
