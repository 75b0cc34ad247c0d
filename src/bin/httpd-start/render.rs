//! The substitution: every line ending in `# SUBST:<name>`, for the names below, is replaced by the directive the
//! settings give, at the same indentation; the marker stays at the end of the line, so a rendered file shows where
//! each line came from (and renders again to the same text). Other SUBST names (pid, temp, listen, upstream,
//! static, resolver: for tests and the benchmark's sed) are left alone.

use crate::settings::Settings;

/// The markers httpd-start renders (the contract, /work/notes/contract.md "Rendering"); `directive` is the list
/// the code goes by, this one lets the tests check every marker is there.
#[cfg(test)]
pub const MARKERS: [&str; 9] = [
    "hosts",
    "body-size",
    "tls-certificate",
    "tls-key",
    "hsts",
    "rate-limit-zone",
    "rate-limit",
    "https-redirect",
    "drain-health",
];

/// Whether the certificate can be named in the config. `Waiting`: ACME mode before the ACME client wrote the
/// files; nginx then refuses TLS handshakes instead of failing to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    Files,
    Waiting,
}

/// The SUBST name a line ends with, if any.
pub fn marker(line: &str) -> Option<&str> {
    let (_, name) = line.trim_end().rsplit_once("# SUBST:")?;
    (!name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
    .then_some(name)
}

/// Whether the config has a line marked `# SUBST:<name>`.
pub fn has_marker(source: &str, name: &str) -> bool {
    source.lines().any(|line| marker(line) == Some(name))
}

pub fn render(source: &str, settings: &Settings, tls: Tls) -> String {
    let mut out = String::with_capacity(source.len() + 256);
    for line in source.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        match marker(body).and_then(|name| directive(name, settings, tls).map(|d| (name, d))) {
            Some((name, directive)) => {
                let indent = &body[..body.len() - body.trim_start().len()];
                out.push_str(&format!("{indent}{directive}   # SUBST:{name}{newline}"));
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The text of one marker's line; `None` for a name httpd-start does not render.
fn directive(name: &str, s: &Settings, tls: Tls) -> Option<String> {
    let line = match name {
        "hosts" => format!("server_name {};", s.server_names.join(" ")),
        "body-size" => format!("client_max_body_size {};", s.max_body_bytes),
        "tls-certificate" => match tls {
            Tls::Files => format!("ssl_certificate {};", s.tls_cert_file),
            Tls::Waiting => "ssl_reject_handshake on;".into(),
        },
        "tls-key" => match tls {
            Tls::Files => format!("ssl_certificate_key {};", s.tls_key_file),
            Tls::Waiting => format!(
                "# ssl_certificate_key: waiting for the ACME client to write {}",
                s.tls_key_file
            ),
        },
        "hsts" => match &s.hsts {
            Some(value) => format!("add_header Strict-Transport-Security \"{value}\" always;"),
            None => "# Strict-Transport-Security: off (HSTS is empty)".into(),
        },
        "rate-limit-zone" => match &s.rate {
            Some(rate) => format!("limit_req_zone $work_client zone=work:10m rate={rate};"),
            None => "# limit_req_zone: off (RATE_LIMIT_TASKS=off)".into(),
        },
        "rate-limit" => match &s.rate {
            Some(_) => format!("limit_req zone=work burst={} nodelay;", s.burst),
            None => "# limit_req: off (RATE_LIMIT_TASKS=off)".into(),
        },
        "https-redirect" => match s.https_port {
            443 => "return 301 https://$host$request_uri;".into(),
            port => format!("return 301 https://$host:{port}$request_uri;"),
        },
        // The load balancer's health check: 503 from the moment the edge is told to stop (supervise.rs).
        "drain-health" => format!("if (-f {}) {{ return 503 \"draining\\n\"; }}", s.drain_file),
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// One line per marker, with the odd indentations and endings a config can have, and markers that are not
    /// httpd-start's.
    const SOURCE: &str = "\
pid /tmp/nginx.pid;   # SUBST:pid
http {
    limit_req_zone $work_client zone=work:10m rate=1r/s;   # SUBST:rate-limit-zone
    client_max_body_size 1m;  # SUBST:body-size
    server {
        listen 8080;  # SUBST:listen
        server_name localhost;  # SUBST:hosts
\t\tssl_certificate /x;   # SUBST:tls-certificate
        ssl_certificate_key /y;   # SUBST:tls-key   \r
        add_header Strict-Transport-Security \"max-age=1\" always;   # SUBST:hsts
        location / {
            limit_req zone=work burst=1 nodelay;   # SUBST:rate-limit
            return 301 https://$host$request_uri;   # SUBST:https-redirect
        }
        location = /edge-health {
            if (-f /x) { return 503; }   # SUBST:drain-health
        }
        # a comment that mentions SUBST:hosts in passing
    }
}
# SUBST:unknown";

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|name| vars.get(name).cloned()).expect("valid settings")
    }

    #[test]
    fn every_marker_is_rendered_in_place() {
        let s = settings(&[
            ("ALLOWED_HOSTS", "example.com,.example.org,*,[::1]"),
            ("MAX_BODY_BYTES", "2048"),
            ("TLS_CERT_FILE", "/srv/acme/tls/cert.pem"),
            ("TLS_KEY_FILE", "/srv/acme/tls/key.pem"),
            ("HSTS", "max-age=63072000; includeSubDomains"),
            ("RATE_LIMIT_TASKS", "600r/m"),
            ("RATE_LIMIT_BURST", "5"),
            ("HTTPS_PORT", "8443"),
        ]);
        let expected = "\
pid /tmp/nginx.pid;   # SUBST:pid
http {
    limit_req_zone $work_client zone=work:10m rate=600r/m;   # SUBST:rate-limit-zone
    client_max_body_size 2048;   # SUBST:body-size
    server {
        listen 8080;  # SUBST:listen
        server_name example.com .example.org ~. [::1];   # SUBST:hosts
\t\tssl_certificate /srv/acme/tls/cert.pem;   # SUBST:tls-certificate
        ssl_certificate_key /srv/acme/tls/key.pem;   # SUBST:tls-key
        add_header Strict-Transport-Security \"max-age=63072000; includeSubDomains\" always;   # SUBST:hsts
        location / {
            limit_req zone=work burst=5 nodelay;   # SUBST:rate-limit
            return 301 https://$host:8443$request_uri;   # SUBST:https-redirect
        }
        location = /edge-health {
            if (-f /tmp/httpd-start.draining) { return 503 \"draining\\n\"; }   # SUBST:drain-health
        }
        # a comment that mentions SUBST:hosts in passing
    }
}
# SUBST:unknown";
        assert_eq!(render(SOURCE, &s, Tls::Files), expected);
        for name in MARKERS {
            assert!(has_marker(SOURCE, name), "the test source lacks {name}");
        }
    }

    #[test]
    fn defaults_and_the_off_switches() {
        let out = render(
            SOURCE,
            &settings(&[("RATE_LIMIT_TASKS", "off")]),
            Tls::Waiting,
        );
        for line in [
            "    # limit_req_zone: off (RATE_LIMIT_TASKS=off)   # SUBST:rate-limit-zone\n",
            "    client_max_body_size 1048576;   # SUBST:body-size\n",
            "        server_name localhost 127.0.0.1 [::1];   # SUBST:hosts\n",
            "\t\tssl_reject_handshake on;   # SUBST:tls-certificate\n",
            "        # ssl_certificate_key: waiting for the ACME client to write /run/secrets/tls_key   # SUBST:tls-key\n",
            "        # Strict-Transport-Security: off (HSTS is empty)   # SUBST:hsts\n",
            "            # limit_req: off (RATE_LIMIT_TASKS=off)   # SUBST:rate-limit\n",
            "            return 301 https://$host$request_uri;   # SUBST:https-redirect\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        let out = render(SOURCE, &settings(&[]), Tls::Files);
        assert!(out.contains("rate=10r/s;   # SUBST:rate-limit-zone\n"));
        assert!(out.contains("limit_req zone=work burst=20 nodelay;   # SUBST:rate-limit\n"));
        assert!(out.contains("ssl_certificate /run/secrets/tls_cert;   # SUBST:tls-certificate\n"));
    }

    #[test]
    fn rendering_a_rendered_file_changes_nothing() {
        let s = settings(&[("HSTS", "max-age=1")]);
        let once = render(SOURCE, &s, Tls::Files);
        assert_eq!(render(&once, &s, Tls::Files), once);
    }

    #[test]
    fn other_lines_are_kept_byte_for_byte() {
        let source = "a\r\nb # SUBST:\n  c # SUBST:Hosts\nd # SUBST:hosts x\n\n";
        assert_eq!(render(source, &settings(&[]), Tls::Files), source);
        assert_eq!(marker("x # SUBST:tls-key  "), Some("tls-key"));
        assert_eq!(marker("x # SUBST:"), None);
        assert!(!has_marker(
            "ssl_certificate /x; # SUBST:tls-certificate-x",
            "tls-certificate"
        ));
    }
}
