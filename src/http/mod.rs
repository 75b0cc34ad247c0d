//! The HTTP side: routes, extractors, middleware and the JSON error body they share.

pub mod access_log;
pub mod api_token;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod finished_tasks;
pub mod health;
pub mod hosts;
pub mod page;
pub mod page_snapshot;
pub mod request_id;
pub mod security_headers;
pub mod static_files;
pub mod tasks_api;
