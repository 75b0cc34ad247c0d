//! Logging: JSON lines for machines (the default without DEBUG), pretty lines for people.
//!
//! Lines go through `tracing_appender`'s writer thread: a request formats its line and queues it, and the thread
//! writes whatever is queued with one buffered `write(2)`, instead of one unbuffered write per line on the request
//! path. The queue is not lossy: when it is full (a burst bigger than the writer keeps up with) a request waits
//! rather than a line being dropped.

use std::io::{BufWriter, Stderr};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines queued for the writer thread before a request has to wait.
const QUEUED_LINES: usize = 16 * 1024;

/// Keep it until the process ends: dropping it flushes the lines still queued.
#[must_use = "dropping the guard stops the log writer; hold it until exit"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). Safe to call more than once: later calls
/// change nothing (and their guard holds nothing).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::<Stderr>::new(std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}
