//! Where log lines go: the thread that formats a line appends it to one shared buffer, and a writer thread writes
//! the buffer to stderr, a batch per `write(2)`, at most every [`GATHER_FOR`] under load.
//!
//! `tracing_appender`'s non-blocking writer, used before, passes each line through a channel and wakes its thread
//! for it: at thousands of requests a second, the wake-up and the context switch per access line cost the server
//! about a tenth of a request's CPU. Here a line costs a lock and a copy; a writer that is idle is woken by the first
//! line, writes it at once, then gathers for [`GATHER_FOR`] before it writes again, so a busy server writes its
//! log in a few dozen batches a second and a quiet one without delay.
//!
//! Nothing is dropped, and a request never waits on a `write(2)`: only when [`MAX_WAITING_BYTES`] are waiting
//! (stderr is not being read) do the threads that log wait for the writer. Dropping the [`LogFlushGuard`] writes
//! what is left.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers lines after a batch.
pub const GATHER_FOR: Duration = Duration::from_millis(10);
/// Lines waiting beyond this make the threads that log wait (the output is not keeping up).
pub const MAX_WAITING_BYTES: usize = 4 << 20;

#[derive(Default)]
struct Waiting {
    lines: Vec<u8>,
    writer_idle: bool,
    closing: bool,
}

#[derive(Default)]
struct Shared {
    waiting: Mutex<Waiting>,
    line_arrived: Condvar,
    taken: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The `MakeWriter` for `tracing_subscriber`: every handle appends to the same buffer.
#[derive(Clone)]
pub struct BatchedWriter {
    shared: Arc<Shared>,
}

/// Keep it until the process ends: dropping it writes the lines still waiting and stops the writer thread.
#[must_use = "dropping the guard stops the log writer; hold it until exit"]
pub struct LogFlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl BatchedWriter {
    /// Starts the writer thread, writing to `out`.
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<(Self, LogFlushGuard)> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = shared.clone();
                move || write_batches(&shared, out)
            })?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            LogFlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    fn append(&self, line: &[u8]) {
        let mut waiting = self.shared.lock();
        while waiting.lines.len() >= MAX_WAITING_BYTES && !waiting.closing {
            waiting = self
                .shared
                .taken
                .wait(waiting)
                .unwrap_or_else(|p| p.into_inner());
        }
        waiting.lines.extend_from_slice(line);
        if waiting.writer_idle {
            waiting.writer_idle = false;
            self.shared.line_arrived.notify_one();
        }
    }
}

fn write_batches(shared: &Shared, mut out: impl Write) {
    let mut batch = Vec::new();
    loop {
        {
            let mut waiting = shared.lock();
            while waiting.lines.is_empty() {
                if waiting.closing {
                    return;
                }
                waiting.writer_idle = true;
                waiting = shared
                    .line_arrived
                    .wait(waiting)
                    .unwrap_or_else(|p| p.into_inner());
            }
            std::mem::swap(&mut waiting.lines, &mut batch);
        }
        shared.taken.notify_all();
        // Nowhere to report a failed write of the log itself; the lines are dropped, the service goes on.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        std::thread::sleep(GATHER_FOR);
    }
}

impl Drop for LogFlushGuard {
    fn drop(&mut self) {
        let mut waiting = self.shared.lock();
        waiting.closing = true;
        self.shared.line_arrived.notify_one();
        drop(waiting);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One formatted line at a time, as `tracing_subscriber` writes them.
pub struct LineSink<'a>(&'a BatchedWriter);

impl Write for LineSink<'_> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedWriter {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shared output: what the writer thread wrote, and how many writes it took.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut out = self.0.lock().unwrap();
            out.0.extend_from_slice(buf);
            out.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_whole_in_few_writes_and_flushed_at_exit() {
        let out = Captured::default();
        let (writer, guard) = BatchedWriter::spawn(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        let line = format!("thread {t} line {i}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (bytes, writes) = out.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        for t in 0..4 {
            let numbers: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(numbers, (0..5000).collect::<Vec<_>>(), "thread {t}");
        }
        assert_eq!(text.lines().count(), 20_000);
        assert!(writes < 20_000, "one write per line: {writes}");
    }
}
