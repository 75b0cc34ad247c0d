//! The Django Docker Sample, in Rust: a web app, its tasks worker and the operational commands, as a library
//! behind the thin `app` binary.

pub mod assets;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod shutdown;
pub mod startup;
pub mod tasks;
pub mod telemetry;
