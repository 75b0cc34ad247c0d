//! The settings' validation: defaults, valid values, and every problem listed at once.

use super::*;
use std::collections::HashMap;

fn settings(pairs: &[(&str, &str)]) -> Result<Settings, Vec<String>> {
    let vars: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| vars.get(name).cloned())
}

#[test]
fn defaults_are_the_contracts() {
    let s = settings(&[]).expect("the defaults are valid");
    assert_eq!(s.server_names, ["localhost", "127.0.0.1", "[::1]"]);
    assert_eq!(s.max_body_bytes, 1_048_576);
    assert_eq!(s.tls_cert_file, "/run/secrets/tls_cert");
    assert_eq!(s.tls_key_file, "/run/secrets/tls_key");
    assert!(!s.tls_acme);
    assert_eq!(s.hsts, None);
    assert_eq!(s.rate.as_deref(), Some("10r/s"));
    assert_eq!(s.burst, 20);
    assert_eq!(s.https_port, 443);
    assert_eq!(s.keep_releases, 2);
    assert_eq!(s.drain, Duration::ZERO);
    assert_eq!(s.drain_file, "/tmp/httpd-start.draining");
}

#[test]
fn empty_values_count_as_unset() {
    let blank = [
        "ALLOWED_HOSTS",
        "MAX_BODY_BYTES",
        "TLS_CERT_FILE",
        "TLS_KEY_FILE",
        "TLS_ACME",
        "HSTS",
        "RATE_LIMIT_TASKS",
        "RATE_LIMIT_BURST",
        "HTTPS_PORT",
        "STATIC_KEEP_RELEASES",
        "DRAIN_SECONDS",
        "TMPDIR",
    ]
    .map(|k| (k, " "));
    assert_eq!(settings(&blank), settings(&[]));
}

#[test]
fn valid_values_are_taken() {
    let s = settings(&[
        (
            "ALLOWED_HOSTS",
            " Example.COM, .example.org,*,[2001:db8::1],10.0.0.1,web_1, example.com ,,",
        ),
        ("MAX_BODY_BYTES", "65536"),
        ("TLS_CERT_FILE", "/srv/acme/tls/cert.pem"),
        ("TLS_KEY_FILE", "/srv/acme/tls/key.pem"),
        ("TLS_ACME", "TRUE"),
        ("HSTS", "max-age=63072000; includeSubDomains; preload"),
        ("RATE_LIMIT_TASKS", "600r/m"),
        ("RATE_LIMIT_BURST", "0"),
        ("HTTPS_PORT", "8443"),
        ("STATIC_KEEP_RELEASES", "0"),
        ("DRAIN_SECONDS", "5"),
        ("TMPDIR", "/run/user/1000/"),
    ])
    .expect("valid");
    assert_eq!(
        s.server_names,
        [
            "example.com",
            ".example.org",
            "~.",
            "[2001:db8::1]",
            "10.0.0.1",
            "web_1"
        ]
    );
    assert_eq!(s.max_body_bytes, 65536);
    assert_eq!(s.tls_cert_file, "/srv/acme/tls/cert.pem");
    assert!(s.tls_acme);
    assert_eq!(
        s.hsts.as_deref(),
        Some("max-age=63072000; includeSubDomains; preload")
    );
    assert_eq!(s.rate.as_deref(), Some("600r/m"));
    assert_eq!(s.burst, 0);
    assert_eq!(s.https_port, 8443);
    assert_eq!(s.keep_releases, 0);
    assert_eq!(s.drain, Duration::from_secs(5));
    assert_eq!(s.drain_file, "/run/user/1000/httpd-start.draining");
    assert_eq!(settings(&[("RATE_LIMIT_TASKS", "OFF")]).unwrap().rate, None);
    assert!(!settings(&[("TLS_ACME", "no")]).unwrap().tls_acme);
}

#[test]
fn every_problem_is_listed_at_once() {
    let problems = settings(&[
        (
            "ALLOWED_HOSTS",
            "ok.example, bad host,evil;include /etc/passwd,a{b},$host,[::zz],\"q\"",
        ),
        ("MAX_BODY_BYTES", "0"),
        ("TLS_CERT_FILE", "relative/cert.pem"),
        ("TLS_KEY_FILE", "/run/key.pem; include /x"),
        ("TLS_ACME", "maybe"),
        ("HSTS", "max-age=1\"; add_header X 1"),
        ("RATE_LIMIT_TASKS", "10 r/s"),
        ("RATE_LIMIT_BURST", "-1"),
        ("HTTPS_PORT", "65536"),
        ("STATIC_KEEP_RELEASES", "two"),
        ("DRAIN_SECONDS", "301"),
        ("TMPDIR", "/tmp/a dir"),
    ])
    .expect_err("all invalid");
    let expected = [
        "ALLOWED_HOSTS: \"bad host\"",
        "ALLOWED_HOSTS: \"evil;include /etc/passwd\"",
        "ALLOWED_HOSTS: \"a{b}\"",
        "ALLOWED_HOSTS: \"$host\"",
        "ALLOWED_HOSTS: \"[::zz]\"",
        "ALLOWED_HOSTS: \"\\\"q\\\"\"",
        "MAX_BODY_BYTES:",
        "TLS_CERT_FILE: expected an absolute path",
        "TLS_KEY_FILE: the path may not contain ';'",
        "TLS_ACME:",
        "HSTS: the value may not contain a double quote",
        "RATE_LIMIT_TASKS:",
        "RATE_LIMIT_BURST:",
        "HTTPS_PORT:",
        "STATIC_KEEP_RELEASES:",
        "DRAIN_SECONDS: expected a whole number of seconds from 0 to 300",
        "TMPDIR: expected an absolute path",
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for (problem, start) in problems.iter().zip(expected) {
        assert!(problem.starts_with(start), "{problem:?} vs {start:?}");
        assert!(!problem.contains('\n'), "one line each: {problem:?}");
    }
}

#[test]
fn values_that_could_carry_nginx_syntax_are_refused() {
    for host in [
        "a b",
        "a;b",
        "a'b",
        "a\"b",
        "a{b",
        "a}b",
        "a$b",
        "a#b",
        "a\\b",
        "a\nb",
        "~.*",
        "*.example.com",
        "a..b",
        "-a",
        "a-",
        ".",
        "[::1",
        "::1",
        "[example.com]",
    ] {
        assert!(
            settings(&[("ALLOWED_HOSTS", host)]).is_err(),
            "{host:?} must be refused"
        );
    }
    for hsts in [
        "includeSubDomains",
        "max-age=",
        "max-age=x",
        "max-age=1x",
        "max-age=1; a\"b",
        "max-age=1; a\\",
        "max-age=1; $x",
        "max-age=1\nadd_header",
    ] {
        assert!(
            settings(&[("HSTS", hsts)]).is_err(),
            "HSTS {hsts:?} must be refused"
        );
    }
    for rate in [
        "10",
        "r/s",
        "0r/s",
        "10r/h",
        "-1r/s",
        "1.5r/s",
        "10r/s;",
        "99999999999r/s",
    ] {
        assert!(
            settings(&[("RATE_LIMIT_TASKS", rate)]).is_err(),
            "{rate:?} must be refused"
        );
    }
    for path in ["/a b", "/a\tb", "/a'b", "/a{b", "/a#b", "/a$b", "/a\\b"] {
        assert!(
            settings(&[("TLS_CERT_FILE", path)]).is_err(),
            "{path:?} must be refused"
        );
    }
    for port in ["0", "-1", "http", "1.5"] {
        assert!(settings(&[("HTTPS_PORT", port)]).is_err(), "{port:?}");
    }
    assert!(settings(&[("ALLOWED_HOSTS", ",,")]).is_err());
    assert!(settings(&[("MAX_BODY_BYTES", "9223372036854775808")]).is_err());
}
