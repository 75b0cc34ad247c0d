//! Logging: JSON lines for machines (the default without DEBUG), pretty lines for people, written to stderr in
//! batches by a thread of their own (`log_writer.rs`), so a request never waits on a `write(2)`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::log_writer::{BatchedWriter, LogFlushGuard};

/// Keep it until the process ends: dropping it writes the lines still waiting.
#[must_use = "dropping the guard stops the log writer; hold it until exit"]
pub struct LogGuard {
    _writer: Option<LogFlushGuard>,
}

/// Installs the global subscriber; `RUST_LOG` filters (default `info`). Safe to call more than once: later calls
/// change nothing (and their guard holds nothing).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Ok((writer, guard)) = BatchedWriter::spawn(std::io::stderr()) else {
        // No thread for the writer (the process is out of resources): log straight to stderr.
        let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
        return LogGuard { _writer: None };
    };
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
