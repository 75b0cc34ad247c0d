//! The HTTP side: the router and its state, the handlers, the extractors and middleware, the page's templates
//! and CSRF tokens, and the JSON error body they share.

pub mod access_log;
pub mod api_token;
pub mod backup_status;
pub mod csrf;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod finished_tasks;
pub mod health;
pub mod hosts;
pub mod metrics_endpoint;
pub mod page;
pub mod page_snapshot;
pub mod request_id;
pub mod request_metrics;
pub mod router;
pub mod security_headers;
pub mod state;
pub mod static_files;
pub mod tasks_api;
pub mod templates;
