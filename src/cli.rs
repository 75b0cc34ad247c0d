//! The `app` command line: one binary for every role (the sample's entrypoints and manage.py commands), listed in
//! [`Command`] and dispatched in `dispatch`, one line each.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{check, collectstatic, healthcheck, migrate, wait};
use crate::config::Settings;
use crate::startup::{Application, inherited_listener, run_worker_until_stopped};
use crate::{shutdown, telemetry};

/// Exit status for an invalid configuration.
pub const CONFIG_ERROR: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "app",
    version,
    about = "docker-sample: web server, tasks worker and operational commands"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve HTTP on LISTEN_ADDR (or on the socket passed in LISTEN_FDS) and metrics on METRICS_ADDR (waits for
    /// PostgreSQL and Redis first).
    Serve,
    /// Run the tasks worker and its periodic jobs (waits for PostgreSQL and Redis first).
    Tasks,
    /// Apply the embedded database migrations, then exit. Migrations from a newer version are left as they are.
    Migrate {
        /// Fail instead when the database has a migration this version does not know (restoring a backup).
        #[arg(long)]
        refuse_newer: bool,
    },
    /// Wait until PostgreSQL and Redis answer, with backoff, up to WAIT_TIMEOUT seconds.
    Wait,
    /// Exit 0 when the running server answers its liveness endpoint within 2 s.
    Healthcheck {
        /// URL to GET (default: http://127.0.0.1:PORT/healthz, PORT from LISTEN_ADDR).
        #[arg(long, conflicts_with = "metrics")]
        url: Option<String>,
        /// GET http://127.0.0.1:PORT/metrics instead, PORT from METRICS_ADDR (for `app tasks`, which serves no other port).
        #[arg(long)]
        metrics: bool,
    },
    /// Write the static assets (hashed names, .gz siblings, manifest.json) into DIR.
    Collectstatic { dir: PathBuf },
    /// Validate the configuration and print it with secrets redacted.
    Check,
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime's threads exist: taking it edits the environment (see `inherited_listener::take`).
    let inherited = match cli.command {
        Command::Serve => match inherited_listener::take() {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("{err:#}");
                return ExitCode::from(CONFIG_ERROR);
            }
        },
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command, inherited))
}

/// `inherited`: the listening socket passed to `app serve` (LISTEN_FDS), if any.
async fn dispatch(command: Command, inherited: Option<std::net::TcpListener>) -> ExitCode {
    match command {
        Command::Healthcheck { url, metrics } => healthcheck::run(url, metrics).await,
        Command::Collectstatic { dir } => collectstatic::run(&dir),
        Command::Check => with_settings(|settings| check::run(&settings)),
        Command::Wait => with_dependencies(async |_| Ok(())).await,
        Command::Migrate { refuse_newer } => {
            with_dependencies(async |settings| migrate::run(settings, refuse_newer).await).await
        }
        Command::Serve => {
            with_dependencies(async |settings| {
                let application = Application::build_on(settings, inherited).await?;
                application
                    .run_until_stopped(shutdown::shutdown_signal())
                    .await
            })
            .await
        }
        Command::Tasks => {
            with_dependencies(async |settings| {
                run_worker_until_stopped(settings, shutdown::shutdown_signal()).await
            })
            .await
        }
    }
}

/// The configuration, or every problem in it listed and the exit status [`CONFIG_ERROR`].
fn load_settings() -> Result<Settings, ExitCode> {
    Settings::from_env().map_err(|err| {
        eprint!("{err}");
        ExitCode::from(CONFIG_ERROR)
    })
}

/// Runs `command` with the configuration.
fn with_settings(command: impl FnOnce(Settings)) -> ExitCode {
    match load_settings() {
        Ok(settings) => {
            command(settings);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The commands that need PostgreSQL and Redis: each logs as configured and waits for both first, so no wrapper
/// script is needed.
async fn with_dependencies(command: impl AsyncFnOnce(Settings) -> anyhow::Result<()>) -> ExitCode {
    let settings = match load_settings() {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let _log_writer = telemetry::init(settings.log_format);
    let result = match wait::wait_for_dependencies(&settings).await {
        Ok(()) => command(settings).await,
        Err(err) => Err(err.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
