//! The listening socket a socket holder hands over (the systemd protocol: `LISTEN_FDS`, `LISTEN_PID`), as
//! `watchexec --socket`, systemfd and systemd socket activation do. The holder keeps the socket open while the
//! server is rebuilt and restarted, so a connection made meanwhile waits in its backlog instead of being refused.

use std::net::TcpListener;

use anyhow::Context;

/// The kernel caps it at net.core.somaxconn (4096 on current Linux, 128 on macOS).
const BACKLOG: i32 = 1024;

/// The TCP listener passed in `LISTEN_FDS` (its first descriptor), or `None` when none was passed (or it was
/// meant for another process: `LISTEN_PID` names another pid).
///
/// Call it before the async runtime starts: listenfd removes the variables from the environment (so that no child
/// adopts the socket too), which is sound only while the process has a single thread.
pub fn take() -> anyhow::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    if fds.len() == 0 {
        return Ok(None);
    }
    let listener = fds
        .take_tcp_listener(0)
        .context("LISTEN_FDS: the first inherited descriptor is not a TCP socket")?
        .context("LISTEN_FDS: the inherited socket was already taken")?;
    // tokio's listener needs a non-blocking socket; a holder may pass a blocking one.
    listener
        .set_nonblocking(true)
        .context("LISTEN_FDS: cannot make the inherited socket non-blocking")?;
    // listen(2) again sets the queue of connections not yet accepted: watchexec opens the socket with a backlog of
    // 1, and while no process accepts (the first build, a restart) the kernel drops the connections past it, to
    // be retried by the client a second later. The holder's socket keeps the larger queue after this process.
    socket2::SockRef::from(&listener)
        .listen(BACKLOG)
        .context("LISTEN_FDS: cannot set the inherited socket's backlog")?;
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_inherited_without_listen_fds() {
        // The test runner passes no LISTEN_FDS (cargo test is not socket-activated).
        assert!(std::env::var_os("LISTEN_FDS").is_none());
        assert!(take().expect("no error without LISTEN_FDS").is_none());
    }
}
