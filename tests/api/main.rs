//! The integration tests: one binary (fast to link), against real PostgreSQL and Redis (see `servers`).

mod helpers;
mod servers;

mod health;
mod page;
mod tasks_api;
mod worker;

mod outage;
mod process;
