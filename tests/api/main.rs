//! The integration tests: one binary (fast to link), against real PostgreSQL and Redis (see `servers`).

mod child;
mod helpers;
mod servers;

mod access_log;
mod api_token;
mod backlog;
mod batching;
mod compression;
mod csrf_cookie;
mod headers_once;
mod health;
mod idempotency;
mod page;
mod tasks_api;
mod worker;

mod outage;
mod password_rotation;
mod pg_restart;
mod redis_restart;

mod backup;
mod collectstatic;
mod commands;
mod configuration;
mod lame_duck;
mod signals;
