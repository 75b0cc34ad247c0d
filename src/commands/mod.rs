//! The one-shot `app` subcommands (the sample's `manage.py` commands and `wait_entrypoint.py`), one file each. The
//! long-running roles, `serve` and `tasks`, are built in `startup/`; `cli.rs` lists them all.

pub mod check;
pub mod collectstatic;
pub mod healthcheck;
pub mod migrate;
pub mod wait;
