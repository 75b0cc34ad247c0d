//! The settings httpd-start renders into the nginx config, read from the environment and validated. Every value
//! ends up inside an nginx directive, so each is checked against what its directive accepts and nothing else: a
//! value can never add nginx syntax (`;`, `{`, quotes, `$` variables, `#` comments, line breaks).
//!
//! Like the app (core/src/config/env.rs), an empty variable counts as unset (compose env files often say `X=`), and
//! every problem is collected, so one run lists them all.

use std::net::Ipv6Addr;
use std::time::Duration;

pub const DEFAULT_ALLOWED_HOSTS: &str = "localhost,127.0.0.1,[::1]";
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
pub const DEFAULT_TLS_CERT_FILE: &str = "/run/secrets/tls_cert";
pub const DEFAULT_TLS_KEY_FILE: &str = "/run/secrets/tls_key";
pub const DEFAULT_RATE_LIMIT_TASKS: &str = "10r/s";
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 20;
pub const DEFAULT_HTTPS_PORT: u16 = 443;
pub const DEFAULT_STATIC_KEEP_RELEASES: u16 = 2;
/// The longest DRAIN_SECONDS: a drain longer than the stop grace period (Compose and Swarm: 30 s in this project)
/// would end in a SIGKILL.
pub const MAX_DRAIN_SECONDS: u64 = 300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `server_name` arguments: lowercase, deduplicated, `*` already written as nginx's `~.`.
    pub server_names: Vec<String>,
    pub max_body_bytes: u64,
    pub tls_cert_file: String,
    pub tls_key_file: String,
    /// true: the certificate comes from the ACME client and may not exist yet.
    pub tls_acme: bool,
    /// The Strict-Transport-Security value; `None` sends no header.
    pub hsts: Option<String>,
    /// nginx's `rate=` (`10r/s`, `600r/m`); `None` is `RATE_LIMIT_TASKS=off`.
    pub rate: Option<String>,
    pub burst: u32,
    pub https_port: u16,
    /// How many releases before this one keep their hashed assets (releases.rs).
    pub keep_releases: u16,
    /// DRAIN_SECONDS: how long a stop signal is held back while the health location answers 503 (supervise.rs).
    pub drain: Duration,
    /// The file whose presence makes the health location answer 503: `$TMPDIR/httpd-start.draining`.
    pub drain_file: String,
}

impl Settings {
    pub fn from_env() -> Result<Self, Vec<String>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Every problem, one line each (without the `httpd-start: ` prefix), or the settings.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Vec<String>> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut problems = Vec::new();

        let hosts_raw = get("ALLOWED_HOSTS").unwrap_or_else(|| DEFAULT_ALLOWED_HOSTS.into());
        let server_names = server_names(&hosts_raw, &mut problems);

        let max_body_bytes = match get("MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY_BYTES,
            // nginx holds sizes as off_t: at most i64::MAX.
            Some(raw) => match raw.parse::<i64>() {
                Ok(n) if n > 0 => n.unsigned_abs(),
                _ => {
                    problems.push(format!(
                        "MAX_BODY_BYTES: expected a positive whole number of bytes, got {raw:?}"
                    ));
                    DEFAULT_MAX_BODY_BYTES
                }
            },
        };

        let tls_cert_file = tls_path(
            "TLS_CERT_FILE",
            get("TLS_CERT_FILE"),
            DEFAULT_TLS_CERT_FILE,
            &mut problems,
        );
        let tls_key_file = tls_path(
            "TLS_KEY_FILE",
            get("TLS_KEY_FILE"),
            DEFAULT_TLS_KEY_FILE,
            &mut problems,
        );

        let tls_acme = match get("TLS_ACME").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => {
                problems.push(format!("TLS_ACME: expected true or false, got {v:?}"));
                false
            }
        };

        let hsts = get("HSTS").and_then(|v| match hsts_problem(&v) {
            None => Some(v),
            Some(why) => {
                problems.push(format!("HSTS: {why}, got {v:?}"));
                None
            }
        });

        let rate = match get("RATE_LIMIT_TASKS") {
            None => Some(DEFAULT_RATE_LIMIT_TASKS.to_string()),
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            Some(v) => match rate(&v) {
                Some(rate) => Some(rate),
                None => {
                    problems.push(format!(
                        "RATE_LIMIT_TASKS: expected a rate such as 10r/s or 600r/m (a whole number above 0, no spaces), or off, got {v:?}"
                    ));
                    Some(DEFAULT_RATE_LIMIT_TASKS.to_string())
                }
            },
        };

        let burst = match get("RATE_LIMIT_BURST") {
            None => DEFAULT_RATE_LIMIT_BURST,
            Some(raw) => raw.parse::<u32>().unwrap_or_else(|_| {
                problems.push(format!(
                    "RATE_LIMIT_BURST: expected a whole number of requests, 0 or more, got {raw:?}"
                ));
                DEFAULT_RATE_LIMIT_BURST
            }),
        };

        let https_port = match get("HTTPS_PORT") {
            None => DEFAULT_HTTPS_PORT,
            Some(raw) => match raw.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    problems.push(format!(
                        "HTTPS_PORT: expected a port number from 1 to 65535, got {raw:?}"
                    ));
                    DEFAULT_HTTPS_PORT
                }
            },
        };

        let keep_releases = match get("STATIC_KEEP_RELEASES") {
            None => DEFAULT_STATIC_KEEP_RELEASES,
            Some(raw) => raw.parse::<u16>().unwrap_or_else(|_| {
                problems.push(format!(
                    "STATIC_KEEP_RELEASES: expected a whole number of earlier releases, 0 or more, got {raw:?}"
                ));
                DEFAULT_STATIC_KEEP_RELEASES
            }),
        };

        let drain = match get("DRAIN_SECONDS") {
            None => Duration::ZERO,
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n <= MAX_DRAIN_SECONDS => Duration::from_secs(n),
                _ => {
                    problems.push(format!(
                        "DRAIN_SECONDS: expected a whole number of seconds from 0 to {MAX_DRAIN_SECONDS}, got {raw:?}"
                    ));
                    Duration::ZERO
                }
            },
        };

        let tmp = get("TMPDIR").unwrap_or_else(|| "/tmp".into());
        let tmp = tmp.trim_end_matches('/');
        let drain_file = format!("{tmp}/httpd-start.draining");
        if !drain_file.starts_with('/')
            || !drain_file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
        {
            problems.push(format!(
                "TMPDIR: expected an absolute path of letters, digits and / . _ - (it is written into the nginx config), got {tmp:?}"
            ));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Settings {
            server_names,
            max_body_bytes,
            tls_cert_file,
            tls_key_file,
            tls_acme,
            hsts,
            rate,
            burst,
            https_port,
            keep_releases,
            drain,
            drain_file,
        })
    }
}

/// `ALLOWED_HOSTS` as the app reads it (comma-separated, trimmed, lowercased, empty entries skipped), each entry
/// turned into a `server_name` argument.
fn server_names(raw: &str, problems: &mut Vec<String>) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let entry = entry.to_ascii_lowercase();
        match server_name(&entry) {
            Some(name) if !names.contains(&name) => names.push(name),
            Some(_) => {}
            None => problems.push(format!(
                "ALLOWED_HOSTS: {entry:?} is not a host name, an IPv4 address, an [IPv6] address, a .domain or *"
            )),
        }
    }
    if names.is_empty() && !problems.iter().any(|p| p.starts_with("ALLOWED_HOSTS")) {
        problems.push(format!("ALLOWED_HOSTS: no host name in {raw:?}"));
    }
    names
}

/// One lowercase `ALLOWED_HOSTS` entry as nginx's `server_name` argument, or `None` when it is not one of the forms
/// the app accepts.
fn server_name(entry: &str) -> Option<String> {
    if entry == "*" {
        // The app's "any host": an nginx regular expression matching every non-empty name.
        return Some("~.".into());
    }
    if let Some(inner) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok().then(|| entry.to_string());
    }
    // `.example.com` is nginx's own syntax for the domain and its subdomains, like the app's pattern.
    let name = entry.strip_prefix('.').unwrap_or(entry);
    is_host_name(name).then(|| entry.to_string())
}

/// DNS labels of letters, digits, `-` and `_` (compose service names), none empty; dotted IPv4 addresses pass too.
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An absolute path nginx reads as one plain argument: no whitespace, quotes, `;`, braces, `#`, `$` (nginx would
/// take `$name` in ssl_certificate as a variable) or backslash.
fn tls_path(
    name: &str,
    value: Option<String>,
    default: &str,
    problems: &mut Vec<String>,
) -> String {
    let Some(path) = value else {
        return default.to_string();
    };
    if !path.starts_with('/') {
        problems.push(format!("{name}: expected an absolute path, got {path:?}"));
    } else if let Some(c) = path.chars().find(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, ';' | '"' | '\'' | '{' | '}' | '#' | '$' | '\\')
    }) {
        problems.push(format!(
            "{name}: the path may not contain {c:?} (nginx would read it as syntax), got {path:?}"
        ));
    }
    path
}

/// Why an `HSTS` value cannot go inside `add_header Strict-Transport-Security "…"`, if it cannot.
fn hsts_problem(value: &str) -> Option<&'static str> {
    // Inside nginx's double quotes, `"` ends the value, `\` escapes and `$` interpolates a variable.
    if value
        .chars()
        .any(|c| c.is_control() || matches!(c, '"' | '\\' | '$'))
    {
        return Some("the value may not contain a double quote, a backslash, a $ or a line break");
    }
    let Some(rest) = value.strip_prefix("max-age=") else {
        return Some("expected a value starting with max-age=<seconds>");
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || !matches!(rest.as_bytes().get(digits), None | Some(b';' | b' ')) {
        return Some("expected max-age=<seconds> (a whole number) first");
    }
    None
}

/// `10r/s` or `600r/m` exactly as nginx's `rate=` takes it.
fn rate(value: &str) -> Option<String> {
    let (number, unit) = value
        .strip_suffix("r/s")
        .map(|n| (n, "s"))
        .or_else(|| value.strip_suffix("r/m").map(|n| (n, "m")))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // nginx stores the rate ×1000 in an unsigned integer; a u32 count stays far from that limit.
    let n: u32 = number.parse().ok().filter(|n| *n > 0)?;
    Some(format!("{n}r/{unit}"))
}

#[cfg(test)]
mod tests;
