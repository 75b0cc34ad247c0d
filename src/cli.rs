//! The `app` command line: one binary for every role (the sample's entrypoints and manage.py commands).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;

use crate::config::Settings;
use crate::db::NewerMigrations;
use crate::startup::Application;
use crate::tasks::{Queue, TaskStore, worker::Worker};
use crate::{assets, check, collectstatic, db, healthcheck, shutdown, telemetry, wait};

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
    /// Serve HTTP on LISTEN_ADDR and metrics on METRICS_ADDR (waits for PostgreSQL and Redis first).
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
        /// URL to GET (default: http://127.0.0.1:<port of LISTEN_ADDR>/healthz).
        #[arg(long, conflicts_with = "metrics")]
        url: Option<String>,
        /// GET http://127.0.0.1:<port of METRICS_ADDR>/metrics instead (for `app tasks`, which serves no other port).
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
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> ExitCode {
    match command {
        Command::Healthcheck { url, metrics } => {
            let url = url.unwrap_or_else(|| healthcheck::default_url(metrics));
            match healthcheck::check(&url).await {
                Ok(status) => {
                    println!("healthy: {url} answered {status}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("unhealthy: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Collectstatic { dir } => {
            match collectstatic::collect(&assets::Assets::embedded(), &dir) {
                Ok(collected) => {
                    println!(
                        "{} files written to {}",
                        collected.files.len(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("collectstatic failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        command => {
            let settings = match Settings::from_env() {
                Ok(settings) => settings,
                Err(err) => {
                    eprint!("{err}");
                    return ExitCode::from(CONFIG_ERROR);
                }
            };
            if let Command::Check = command {
                check::print(&settings);
                return ExitCode::SUCCESS;
            }
            let _log_writer = telemetry::init(settings.log_format);
            match run_service(command, settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "stopped with an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// MIGRATE_ON_START: `serve` and `tasks` apply the migrations before they start (under sqlx's advisory lock, so
/// any number of replicas may start at once), for engines with no one-shot step before them (Docker Swarm).
async fn migrate_on_start(settings: &Settings) -> anyhow::Result<()> {
    if settings.migrate_on_start {
        db::migrate(&db::pool(settings), NewerMigrations::Keep).await?;
        tracing::info!("migrations applied (MIGRATE_ON_START)");
    }
    Ok(())
}

/// The commands that need the dependencies: each waits for them first, so no wrapper script is needed.
async fn run_service(command: Command, settings: Settings) -> anyhow::Result<()> {
    wait::wait_for_dependencies(&settings).await?;
    match command {
        Command::Wait => Ok(()),
        Command::Migrate { refuse_newer } => {
            let newer = if refuse_newer {
                NewerMigrations::Refuse
            } else {
                NewerMigrations::Keep
            };
            db::migrate(&db::pool(&settings), newer).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Serve => {
            migrate_on_start(&settings).await?;
            Application::build(settings)
                .await?
                .run_until_stopped(shutdown::shutdown_signal())
                .await
        }
        Command::Tasks => {
            migrate_on_start(&settings).await?;
            let metrics_listener = tokio::net::TcpListener::bind(settings.metrics_addr).await?;
            let metrics = tokio::spawn(
                axum::serve(
                    metrics_listener,
                    crate::metrics::router(crate::metrics::handle()),
                )
                .into_future(),
            );
            let queue =
                Queue::connect(settings.redis_url.expose_secret(), &settings.queue.name).await?;
            let worker = Worker::new(
                TaskStore::new(db::worker_pool(&settings)),
                queue,
                settings.queue.clone(),
            );
            let result = worker
                .run_until_stopped(shutdown::shutdown_signal(), settings.shutdown_timeout)
                .await;
            metrics.abort();
            result
        }
        Command::Healthcheck { .. } | Command::Collectstatic { .. } | Command::Check => Ok(()),
    }
}
