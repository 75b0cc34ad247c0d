//! The two long-running roles, each built and run the same way: `app serve` ([`Application`]) and `app tasks`
//! ([`run_worker_until_stopped`]).

mod http_server;
pub mod inherited_listener;
mod web;
mod worker;

pub use web::Application;
pub use worker::run_worker_until_stopped;
