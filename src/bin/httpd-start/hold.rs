//! `httpd-start hold`: the process of the `edge-ports` container, which owns the edge's network namespace and
//! published ports and runs nothing else. The edge containers join that namespace (`network_mode:
//! service:edge-ports`) and listen with SO_REUSEPORT, so a new edge can start beside the old one on the same ports
//! and the old one can leave: the ports never close (scripts/deploy.sh edge). It waits for SIGTERM, SIGQUIT or
//! SIGINT and exits 0.
//!
//! `httpd-start listening PORT...`, its healthcheck: 0 when a TCP connection to 127.0.0.1 on every PORT opens
//! (some edge listens in the namespace), 1 with one line per port that does not.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::log;

pub fn run(extra: &[std::ffi::OsString]) -> u8 {
    if !extra.is_empty() {
        log("usage: httpd-start hold (no arguments)");
        return 2;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            log(&format!("cannot start the runtime: {err}"));
            return 1;
        }
    };
    runtime.block_on(async {
        let handlers = [
            SignalKind::terminate(),
            SignalKind::quit(),
            SignalKind::interrupt(),
        ]
        .map(signal);
        let [Ok(mut term), Ok(mut quit), Ok(mut int)] = handlers else {
            log("cannot install the signal handlers");
            return 1;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = quit.recv() => {}
            _ = int.recv() => {}
        }
        0
    })
}

pub fn listening(ports: &[std::ffi::OsString]) -> u8 {
    let mut status = 0;
    if ports.is_empty() {
        log("usage: httpd-start listening PORT...");
        return 2;
    }
    for raw in ports {
        let Some(port) = raw.to_str().and_then(|p| p.parse::<u16>().ok()) else {
            log(&format!("listening: {raw:?} is not a port number"));
            return 2;
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if let Err(err) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            log(&format!("nothing answers on port {port}: {err}"));
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;
    use std::net::TcpListener;

    use super::listening;

    fn port_args(ports: &[u16]) -> Vec<OsString> {
        ports
            .iter()
            .map(|p| OsString::from(p.to_string()))
            .collect()
    }

    #[test]
    fn healthy_only_while_every_port_accepts_connections() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, pb) = (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        );
        assert_eq!(listening(&port_args(&[pa, pb])), 0);
        drop(b);
        assert_eq!(listening(&port_args(&[pa, pb])), 1);
    }

    #[test]
    fn a_bad_argument_is_a_usage_error() {
        assert_eq!(listening(&[]), 2);
        assert_eq!(listening(&[OsString::from("https")]), 2);
        assert_eq!(listening(&[OsString::from("70000")]), 2);
    }
}
