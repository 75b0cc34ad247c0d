//! `httpd-start` (src/bin/httpd-start) with a real nginx and real TLS: a certificate renewed on disk is served
//! within the poll interval while a connection opened before keeps working, an ACME certificate is picked up when
//! it appears, the repository's two nginx configs render into configs nginx accepts, and the start-up errors.
//!
//! Needs an nginx with the ssl, http_v2 and limit_req modules: `NGINX_BIN`, else the one `.ci/nginx.sh` builds
//! into target/, else `nginx` on PATH; and the `openssl` command (certificates, and the TLS client). A test fails,
//! saying what to install, when one is missing.
//!
//! A separate test binary from tests/api: it needs neither PostgreSQL nor Redis, nor the app library.

mod drain;
mod support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{
    Connection, Launcher, POLL, eventually, free_port, nginx, path, self_signed,
    served_certificate, write_config,
};

/// A minimal HTTPS server config with httpd-start's TLS markers, everything nginx writes kept in `dir`.
fn tls_config(dir: &Path, port: u16) -> PathBuf {
    let server = format!(
        "        listen 127.0.0.1:{port} ssl;
        server_name localhost;                  # SUBST:hosts
        ssl_certificate /nowhere/cert.pem;      # SUBST:tls-certificate
        ssl_certificate_key /nowhere/key.pem;   # SUBST:tls-key
        location / {{ return 200 \"served\\n\"; }}"
    );
    write_config(dir, "edge-test.conf", &server)
}

/// Replaces the pair the way an ACME client does: each file by an atomic rename, the key first.
fn replace_pair(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("tls dir");
    std::fs::rename(from.join("key.pem"), to.join("key.pem")).expect("rename key");
    std::fs::rename(from.join("cert.pem"), to.join("cert.pem")).expect("rename cert");
}

#[test]
fn a_renewed_certificate_is_served_without_dropping_a_connection() {
    let nginx = nginx();
    let dir = tempfile::tempdir().expect("temp dir");
    let (tls, next) = (dir.path().join("tls"), dir.path().join("next"));
    let old = self_signed(&tls, "old.test");
    let new = self_signed(&next, "new.test");
    assert_ne!(old, new);
    let port = free_port();
    let config = tls_config(dir.path(), port);
    let (cert_file, key_file) = (tls.join("cert.pem"), tls.join("key.pem"));
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[
            ("NGINX_BIN", path(&nginx)),
            ("TLS_CERT_FILE", path(&cert_file)),
            ("TLS_KEY_FILE", path(&key_file)),
            ("ALLOWED_HOSTS", "localhost"),
        ],
        &dir.path().join("run"),
    );
    let first = eventually("nginx to serve HTTPS", Duration::from_secs(15), || {
        launcher.assert_running();
        served_certificate(port)
    });
    assert_eq!(first, old, "the certificate at start");

    // A connection opened before the renewal, with a request started on it and not finished.
    let (mut kept, kept_cert) = Connection::open(port);
    assert_eq!(kept_cert, old);
    kept.send("GET / HTTP/1.1\r\nHost: localhost\r\n");

    replace_pair(&next, &tls);
    let swapped = Instant::now();
    eventually(
        "the new certificate to be served",
        POLL + Duration::from_secs(5),
        || {
            launcher.assert_running();
            served_certificate(port).filter(|cert| *cert == new)
        },
    );
    let took = swapped.elapsed();
    assert!(
        launcher.has_line("httpd-start: the TLS files changed")
            && launcher.has_line("reloading nginx"),
        "one line says why nginx reloaded:\n{}",
        launcher.output()
    );

    // The old connection finishes its request on the old worker.
    kept.send("Connection: close\r\n\r\n");
    kept.read_until("HTTP/1.1 200 OK", Duration::from_secs(10));
    kept.read_until("served", Duration::from_secs(10));

    launcher.signal(libc::SIGQUIT);
    let status = launcher.exits_within(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "graceful stop:\n{}",
        launcher.output()
    );
    eprintln!("the new certificate was served {took:?} after the files were replaced");
}

/// A renewal seen half done (the new key beside the old certificate) fails `nginx -t`: nginx is not reloaded and
/// keeps serving, and the certificate that completes the pair is picked up at the next poll.
#[test]
fn a_half_written_renewal_keeps_the_old_certificate_until_it_is_complete() {
    let nginx = nginx();
    let dir = tempfile::tempdir().expect("temp dir");
    let (tls, next) = (dir.path().join("tls"), dir.path().join("next"));
    let old = self_signed(&tls, "old.test");
    let new = self_signed(&next, "new.test");
    let port = free_port();
    let config = tls_config(dir.path(), port);
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[
            ("NGINX_BIN", path(&nginx)),
            ("TLS_CERT_FILE", path(&tls.join("cert.pem"))),
            ("TLS_KEY_FILE", path(&tls.join("key.pem"))),
        ],
        &dir.path().join("run"),
    );
    eventually(
        "nginx to serve the first certificate",
        Duration::from_secs(15),
        || {
            launcher.assert_running();
            served_certificate(port).filter(|cert| *cert == old)
        },
    );

    std::fs::rename(next.join("key.pem"), tls.join("key.pem")).expect("rename key");
    eventually(
        "the failed nginx -t to be logged",
        POLL + Duration::from_secs(5),
        || {
            launcher.assert_running();
            launcher.has_line("but nginx -t failed").then_some(())
        },
    );
    let output = launcher.output();
    let line = output
        .lines()
        .find(|l| l.contains("but nginx -t failed"))
        .unwrap_or_default();
    assert!(
        line.contains("[emerg]"),
        "the line gives nginx's reason: {line}"
    );
    assert!(!launcher.has_line("reloading nginx"), "{output}");
    assert_eq!(served_certificate(port), Some(old), "still the old pair");

    std::fs::rename(next.join("cert.pem"), tls.join("cert.pem")).expect("rename cert");
    eventually(
        "the completed pair to be served",
        POLL + Duration::from_secs(5),
        || {
            launcher.assert_running();
            served_certificate(port).filter(|cert| *cert == new)
        },
    );
    launcher.signal(libc::SIGQUIT);
    let status = launcher.exits_within(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{}", launcher.output());
}

#[test]
fn an_acme_certificate_is_picked_up_when_it_appears() {
    let nginx = nginx();
    let dir = tempfile::tempdir().expect("temp dir");
    let (tls, issued) = (dir.path().join("tls"), dir.path().join("issued"));
    let cert = self_signed(&issued, "acme.test");
    let port = free_port();
    let config = tls_config(dir.path(), port);
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[
            ("NGINX_BIN", path(&nginx)),
            ("TLS_ACME", "true"),
            ("TLS_CERT_FILE", path(&tls.join("cert.pem"))),
            ("TLS_KEY_FILE", path(&tls.join("key.pem"))),
        ],
        &dir.path().join("run"),
    );
    // Up, and refusing handshakes while there is no certificate.
    eventually("nginx to listen", Duration::from_secs(15), || {
        launcher.assert_running();
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    assert!(
        launcher.has_line("TLS_ACME=true and no certificate yet"),
        "{}",
        launcher.output()
    );
    assert_eq!(
        served_certificate(port),
        None,
        "no handshake before the certificate exists"
    );

    replace_pair(&issued, &tls);
    let got = eventually(
        "the ACME certificate to be served",
        POLL + Duration::from_secs(5),
        || {
            launcher.assert_running();
            served_certificate(port)
        },
    );
    assert_eq!(got, cert);

    launcher.signal(libc::SIGTERM);
    let status = launcher.exits_within(Duration::from_secs(15));
    assert_eq!(
        status.code(),
        Some(0),
        "nginx's status on SIGTERM:\n{}",
        launcher.output()
    );
}

#[test]
fn a_missing_certificate_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = dir.path().join("tls");
    self_signed(&tls, "key-only.test");
    std::fs::remove_file(tls.join("cert.pem")).expect("remove cert");
    let config = tls_config(dir.path(), free_port());
    let missing = tls.join("cert.pem");
    // nginx is never started: a NGINX_BIN that does not exist would add a line of its own.
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[
            ("NGINX_BIN", "/nonexistent/nginx"),
            ("TLS_CERT_FILE", path(&missing)),
            ("TLS_KEY_FILE", path(&tls.join("key.pem"))),
        ],
        &dir.path().join("run"),
    );
    let status = launcher.exits_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1));
    let expected = format!(
        "httpd-start: TLS_CERT_FILE={}: cannot read it: No such file or directory (os error 2)",
        missing.display()
    );
    // The reader thread may still be collecting the last line.
    eventually("the error line", Duration::from_secs(5), || {
        launcher.has_line(&expected).then_some(())
    });
    assert_eq!(launcher.output(), expected);
}

#[test]
fn invalid_settings_are_all_listed_before_anything_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = tls_config(dir.path(), free_port());
    let mut launcher = Launcher::spawn(
        &["run", path(&config)],
        &[
            ("NGINX_BIN", "/nonexistent/nginx"),
            ("ALLOWED_HOSTS", "example.com;include /etc/passwd"),
            ("RATE_LIMIT_TASKS", "fast"),
            ("HTTPS_PORT", "0"),
        ],
        &dir.path().join("run"),
    );
    let status = launcher.exits_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(2));
    eventually("three lines", Duration::from_secs(5), || {
        (launcher.output().lines().count() == 3).then_some(())
    });
    let output = launcher.output();
    for (line, start) in output.lines().zip([
        "httpd-start: ALLOWED_HOSTS: \"example.com;include /etc/passwd\" is not",
        "httpd-start: RATE_LIMIT_TASKS:",
        "httpd-start: HTTPS_PORT:",
    ]) {
        assert!(line.starts_with(start), "{line:?}\n{output}");
    }
}

/// The repository's configs (the httpd image's and the edge's) rendered in each mode pass `nginx -t` through
/// `httpd-start check`, the image's healthcheck. `/tmp/` paths are moved into the test's directory, as the Nix
/// check does (the build sandbox has no /tmp).
#[test]
fn the_repository_configs_render_into_configs_nginx_accepts() {
    let nginx = nginx();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let tls = dir.path().join("tls");
    self_signed(&tls, "localhost");
    let sources = ["nginx/httpd.conf", "nginx/edge.conf"].map(|name| {
        let text = std::fs::read_to_string(repo.join(name)).unwrap_or_else(|e| {
            panic!("cannot read {name} ({e}): the test's source set must include it (nix/rust.nix, app-nextest)")
        });
        (name, text)
    });
    for marker in [
        "hosts",
        "body-size",
        "tls-certificate",
        "tls-key",
        "hsts",
        "rate-limit-zone",
        "rate-limit",
        "https-redirect",
    ] {
        let line_end = format!("# SUBST:{marker}");
        assert!(
            sources
                .iter()
                .any(|(_, text)| text.lines().any(|l| l.trim_end().ends_with(&line_end))),
            "no line of nginx/httpd.conf or nginx/edge.conf ends with `{line_end}`"
        );
    }
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    let modes: [(&str, Vec<(&str, &str)>); 3] = [
        (
            "defaults",
            vec![("TLS_CERT_FILE", path(&cert)), ("TLS_KEY_FILE", path(&key))],
        ),
        (
            "acme-waiting",
            vec![
                ("TLS_ACME", "true"),
                ("TLS_CERT_FILE", "/nonexistent/cert.pem"),
                ("TLS_KEY_FILE", "/nonexistent/key.pem"),
            ],
        ),
        (
            "everything-set",
            vec![
                ("TLS_CERT_FILE", path(&cert)),
                ("TLS_KEY_FILE", path(&key)),
                ("ALLOWED_HOSTS", "example.com,.example.org,*,[::1],10.0.0.1"),
                ("MAX_BODY_BYTES", "65536"),
                ("HSTS", "max-age=63072000; includeSubDomains"),
                ("RATE_LIMIT_TASKS", "off"),
                ("HTTPS_PORT", "8443"),
            ],
        ),
    ];
    for (name, text) in &sources {
        for (mode, vars) in &modes {
            let work = dir
                .path()
                .join(format!("{}-{mode}", name.replace('/', "-")));
            std::fs::create_dir_all(&work).expect("work dir");
            let copy = work.join(Path::new(name).file_name().expect("file name"));
            std::fs::write(&copy, text.replace("/tmp/", &format!("{}/", path(&work))))
                .expect("copy");
            let mut vars = vars.clone();
            vars.push(("NGINX_BIN", path(&nginx)));
            let mut check = Launcher::spawn(&["check", path(&copy)], &vars, &work.join("run"));
            let status = check.exits_within(Duration::from_secs(30));
            let rendered =
                std::fs::read_to_string(work.join("run").join(copy.file_name().expect("name")))
                    .unwrap_or_default();
            assert!(
                status.success(),
                "{name} ({mode}): httpd-start check failed ({status}):\n{}\nrendered:\n{rendered}",
                check.output()
            );
        }
    }
}
