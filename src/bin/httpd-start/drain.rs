//! DRAIN_SECONDS: the edge's lame duck. A load balancer in front of several nodes sends new connections to every
//! node whose health check passes; an nginx told to stop closes its listening socket and the connections that have
//! not sent a request yet, so a client that connected a moment before gets no answer. With a drain, the first stop
//! signal (SIGQUIT or SIGTERM) is held back: httpd-start creates the drain file, which turns the config's health
//! location (`# SUBST:drain-health`) to 503, nginx keeps serving, and the signal reaches nginx when the drain
//! ends. The balancer has by then stopped sending new connections here. A second stop signal goes through at once.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::log;

pub struct Drain {
    length: Duration,
    file: PathBuf,
    held: Option<libc::c_int>,
}

impl Drain {
    /// Removes a drain file left by an earlier run (a restarted container keeps its /tmp only when it is not a
    /// tmpfs), so the health check passes from the start.
    pub fn new(length: Duration, file: &str) -> Self {
        let file = PathBuf::from(file);
        let _ = std::fs::remove_file(&file);
        Self {
            length,
            file,
            held: None,
        }
    }

    /// A stop signal arrived: the signal to send nginx now, or `None` when it is held for the drain, whose end
    /// `timer` is set to.
    pub fn stop(&mut self, sig: libc::c_int, timer: Pin<&mut Sleep>) -> Option<libc::c_int> {
        if self.length.is_zero() || self.held.take().is_some() {
            return Some(sig);
        }
        if let Err(err) = std::fs::write(&self.file, b"") {
            log(&format!(
                "cannot write {} ({err}): stopping without a drain",
                self.file.display()
            ));
            return Some(sig);
        }
        log(&format!(
            "stopping in {} s (DRAIN_SECONDS): the health check answers 503 meanwhile, nginx keeps serving",
            self.length.as_secs()
        ));
        timer.reset(Instant::now() + self.length);
        self.held = Some(sig);
        None
    }

    /// The held signal, once the drain is over.
    pub fn ended(&mut self) -> Option<libc::c_int> {
        self.held.take()
    }

    pub fn holding(&self) -> bool {
        self.held.is_some()
    }
}
