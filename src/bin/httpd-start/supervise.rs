//! `httpd-start run`: nginx as a child process. httpd-start stays as the parent (PID 1 in the container) so that it
//! can re-render the config and reload nginx when the certificate changes: signals are forwarded, SIGHUP re-renders
//! first, the TLS files are polled, a stop signal may wait for a drain (drain.rs), and httpd-start exits with
//! nginx's status.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::Command;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use crate::drain::Drain;
use crate::render::Tls;
use crate::{Job, log, tls};

/// How often the certificate and key files are looked at (metadata only: cheap).
pub const POLL: Duration = Duration::from_secs(5);

/// `watch`: the config names a certificate (nginx/httpd.conf does not), so its files are polled.
pub fn run(job: &Job, watch: bool) -> u8 {
    // One thread: the work is waiting for signals, a child and a timer.
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(supervise(job, watch)),
        Err(err) => {
            log(&format!("cannot start the runtime: {err}"));
            1
        }
    }
}

async fn supervise(job: &Job, watch: bool) -> u8 {
    // Handlers before nginx starts: a signal that arrives meanwhile is then delivered to nginx, not lost (and as a
    // container's PID 1, a signal without a handler would be ignored by the kernel).
    let handlers = [
        SignalKind::terminate(),
        SignalKind::quit(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ]
    .map(signal);
    let [Ok(mut term), Ok(mut quit), Ok(mut int), Ok(mut hup)] = handlers else {
        log("cannot install the signal handlers");
        return 1;
    };

    let mut tls = match job.render_to_file() {
        Ok(tls) => tls,
        Err(err) => {
            log(&err);
            return 1;
        }
    };
    if tls == Tls::Waiting {
        log(&format!(
            "TLS_ACME=true and no certificate yet at {} and {}: TLS handshakes are refused until the ACME client writes them (checked every {} s)",
            job.settings.tls_cert_file,
            job.settings.tls_key_file,
            POLL.as_secs()
        ));
    }
    let mut child = match Command::new(&job.nginx)
        .arg("-e")
        .arg("stderr")
        .arg("-c")
        .arg(&job.rendered)
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            log(&format!("cannot start {}: {err}", job.nginx.display()));
            return 1;
        }
    };
    let Some(pid) = child.id().and_then(|id| libc::pid_t::try_from(id).ok()) else {
        log("nginx exited before it could be supervised");
        return 1;
    };

    let mut drain = Drain::new(job.settings.drain, &job.settings.drain_file);
    let drain_end = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(drain_end);
    let mut stamps = tls::stamps(&job.settings);
    let mut poll = interval_at(Instant::now() + POLL, POLL);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            status = child.wait() => return match status {
                Ok(status) => exit_code(status),
                Err(err) => {
                    log(&format!("lost nginx: {err}"));
                    1
                }
            },
            _ = recv(&mut term) => if let Some(sig) = drain.stop(libc::SIGTERM, drain_end.as_mut()) {
                forward(pid, sig);
            },
            _ = recv(&mut quit) => if let Some(sig) = drain.stop(libc::SIGQUIT, drain_end.as_mut()) {
                forward(pid, sig);
            },
            () = &mut drain_end, if drain.holding() => if let Some(sig) = drain.ended() {
                forward(pid, sig);
            },
            _ = recv(&mut int) => forward(pid, libc::SIGINT),
            _ = recv(&mut hup) => match job.render_to_file() {
                // nginx tests the new config itself on SIGHUP and keeps the old one if it is broken.
                Ok(state) => {
                    tls = state;
                    forward(pid, libc::SIGHUP);
                }
                Err(err) => log(&format!("SIGHUP: {err}; nginx not reloaded")),
            },
            _ = poll.tick(), if watch => {
                let now = tls::stamps(&job.settings);
                if now != stamps {
                    stamps = now;
                    tls = reload_for_new_files(job, tls, pid).await;
                }
            }
        }
    }
}

async fn recv(signal: &mut Signal) {
    // `None` only once the runtime shuts down; waiting forever then is right.
    if signal.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

/// The certificate or key changed: render again (an ACME certificate may have appeared), let `nginx -t` load the
/// files, and reload nginx only when it passes, so a half-written renewal (key replaced, certificate not yet) is
/// never loaded: the next change completes it. Returns what the rendered file now says.
async fn reload_for_new_files(job: &Job, previous: Tls, pid: libc::pid_t) -> Tls {
    let files = format!(
        "{} / {}",
        job.settings.tls_cert_file, job.settings.tls_key_file
    );
    if previous == Tls::Waiting && tls::state(&job.settings) == Tls::Waiting {
        // Still not both there (the ACME client writes the key first): nothing nginx could load yet.
        return previous;
    }
    let state = match job.render_to_file() {
        Ok(state) => state,
        Err(err) => {
            log(&format!(
                "the TLS files changed ({files}) but {err}; nginx not reloaded"
            ));
            return previous;
        }
    };
    let test = Command::new(&job.nginx)
        .args(["-t", "-q", "-e", "stderr", "-c"])
        .arg(&job.rendered)
        .stdin(Stdio::null())
        .output()
        .await;
    match test {
        Ok(out) if out.status.success() => {
            log(&format!(
                "the TLS files changed ({files}): nginx -t passed, reloading nginx"
            ));
            forward(pid, libc::SIGHUP);
        }
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // The first line is nginx's reason (`[emerg] …`); the last only says "test failed".
            let reason = stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            log(&format!(
                "the TLS files changed ({files}) but nginx -t failed, nginx keeps its current certificate: {reason}"
            ));
        }
        Err(err) => log(&format!(
            "the TLS files changed ({files}) but nginx -t could not run: {err}"
        )),
    }
    state
}

fn forward(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. `pid` is our child, not yet reaped
    // (tokio reaps it in `wait`, after which this is never called), so the number cannot belong to another process.
    if unsafe { libc::kill(pid, sig) } != 0 {
        let err = std::io::Error::last_os_error();
        // ESRCH: nginx exited a moment ago; its status arrives through `wait`.
        if err.raw_os_error() != Some(libc::ESRCH) {
            log(&format!("cannot signal nginx ({sig}): {err}"));
        }
    }
}

/// nginx's exit code, or 128 + the signal that killed it (as a shell reports it).
pub fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_childs() {
        // A raw wait status: the exit code is the high byte; a signal number alone means killed by it.
        assert_eq!(exit_code(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_code(ExitStatus::from_raw(1 << 8)), 1);
        assert_eq!(exit_code(ExitStatus::from_raw(2 << 8)), 2);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 143);
    }
}
