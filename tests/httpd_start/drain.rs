//! DRAIN_SECONDS: a stop signal first turns the health location to 503 while nginx keeps serving, and reaches
//! nginx when the drain ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{Launcher, eventually, free_port, nginx, path, write_config};

const DRAIN: Duration = Duration::from_secs(3);

/// Plain HTTP with the health location of nginx/edge.conf, everything nginx writes kept in `dir`.
fn health_config(dir: &Path, port: u16) -> PathBuf {
    let server = format!(
        "        listen 127.0.0.1:{port};
        location = /edge-health {{
            default_type text/plain;
            if (-f /nowhere) {{ return 503; }}   # SUBST:drain-health
            return 200 \"ok\\n\";
        }}
        location / {{ return 200 \"served\\n\"; }}"
    );
    write_config(dir, "drain-test.conf", &server)
}

/// The whole answer to `GET path` on a new connection, or `None` when nothing answers.
fn get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

#[test]
fn a_stop_signal_waits_for_the_drain_while_the_health_check_fails() {
    let nginx = nginx();
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = health_config(dir.path(), port);
    let seconds = DRAIN.as_secs().to_string();
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[("NGINX_BIN", path(&nginx)), ("DRAIN_SECONDS", &seconds)],
        &dir.path().join("run"),
    );
    eventually("the health check to pass", Duration::from_secs(15), || {
        launcher.assert_running();
        get(port, "/edge-health").filter(|a| a.starts_with("HTTP/1.1 200"))
    });

    launcher.signal(libc::SIGQUIT);
    let signalled = Instant::now();
    let health = eventually("the health check to fail", DRAIN, || {
        get(port, "/edge-health").filter(|a| a.starts_with("HTTP/1.1 503"))
    });
    assert!(health.ends_with("draining\n"), "{health:?}");
    let page = get(port, "/");
    assert!(
        page.as_deref()
            .is_some_and(|p| p.starts_with("HTTP/1.1 200") && p.ends_with("served\n")),
        "nginx keeps serving during the drain: {page:?} after {:?}",
        signalled.elapsed()
    );

    let status = launcher.exits_within(DRAIN + Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "graceful stop:\n{}",
        launcher.output()
    );
    assert!(
        signalled.elapsed() >= DRAIN,
        "nginx stopped {:?} after the signal, before the drain of {DRAIN:?} ended",
        signalled.elapsed()
    );
    assert!(
        launcher.has_line("httpd-start: stopping in 3 s (DRAIN_SECONDS)"),
        "{}",
        launcher.output()
    );
}
