//! What the tests drive: the prerequisites (nginx, openssl), httpd-start as a child process, and a TLS client
//! (`openssl s_client`, which prints the certificate it was given).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const LAUNCHER: &str = env!("CARGO_BIN_EXE_httpd-start");
/// httpd-start's poll interval (supervise.rs).
pub const POLL: Duration = Duration::from_secs(5);

// ---- prerequisites -------------------------------------------------------------------------------------------------

pub fn nginx() -> PathBuf {
    let hint = "httpd-start's tests need an nginx with the ssl, http_v2 and limit_req modules: run `bash .ci/nginx.sh` \
                (builds nginx 1.30 into target/), or set NGINX_BIN to such an nginx (nixpkgs' and Debian's have them)";
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = std::fs::read_dir(repo.join("target")).ok().and_then(|dir| {
        dir.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("nginx-"))
            .map(|e| e.path().join("nginx"))
            .find(|p| p.is_file())
    });
    let on_path = || {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("nginx"))
                .find(|p| p.is_file())
        })
    };
    let nginx = match std::env::var_os("NGINX_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => built
            .or_else(on_path)
            .unwrap_or_else(|| panic!("no nginx found. {hint}")),
    };
    let out = Command::new(&nginx)
        .arg("-V")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}. {hint}", nginx.display()));
    let flags = String::from_utf8_lossy(&out.stderr);
    for (wanted, ok) in [
        ("ssl", flags.contains("--with-http_ssl_module")),
        ("http_v2", flags.contains("--with-http_v2_module")),
        (
            "limit_req",
            !flags.contains("--without-http_limit_req_module"),
        ),
    ] {
        assert!(ok, "{} has no {wanted} module. {hint}", nginx.display());
    }
    nginx
}

pub fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install it (Debian: apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A self-signed certificate and its key, written to `dir/cert.pem` and `dir/key.pem`; returns the certificate.
pub fn self_signed(dir: &Path, cn: &str) -> String {
    std::fs::create_dir_all(dir).expect("cert dir");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={cn}"),
        "-keyout",
        path(&key),
        "-out",
        path(&cert),
    ]);
    pem(&std::fs::read_to_string(&cert).expect("cert")).expect("a PEM certificate")
}

pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The first PEM certificate in `text`, without line breaks (s_client prints it as it came).
pub fn pem(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(text[start..end].split_whitespace().collect())
}

/// Writes `dir/name`: an nginx config that keeps everything nginx writes in `dir` and serves `server` (one
/// `server { … }` block, given without its braces).
pub fn write_config(dir: &Path, name: &str, server: &str) -> PathBuf {
    let d = path(dir);
    let config = dir.join(name);
    let text = format!(
        "daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/client-body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    access_log off;
    server {{
{server}
    }}
}}
"
    );
    std::fs::write(&config, text).expect("write config");
    config
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Polls `condition` until it holds or `deadline` passes; the conditions here are subprocesses or file reads, so
/// a short pause between attempts keeps the machine free for the servers under test.
pub fn eventually<T>(what: &str, within: Duration, mut condition: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = condition() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- httpd-start as a child ----------------------------------------------------------------------------------------

pub struct Launcher {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Launcher {
    /// `httpd-start ARGS` with exactly `vars` (and its own TMPDIR, where it renders), in a process group of its own
    /// so that nginx goes with it when a failed test drops it.
    pub fn spawn(args: &[&str], vars: &[(&str, &str)], tmp: &Path) -> Self {
        std::fs::create_dir_all(tmp).expect("run dir");
        let mut child = Command::new(LAUNCHER)
            .args(args)
            .env_clear()
            .envs(vars.iter().copied())
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("httpd-start starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("lines").push(line);
            }
        });
        Launcher { child, lines }
    }

    pub fn output(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    pub fn has_line(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .expect("lines")
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child, which has not been reaped (we hold its Child).
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
    }

    pub fn exits_within(&mut self, within: Duration) -> ExitStatus {
        let child = &mut self.child;
        eventually("httpd-start to exit", within, || {
            child.try_wait().expect("try_wait")
        })
    }

    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("httpd-start exited ({status}):\n{}", self.output());
        }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let pgid = libc::pid_t::try_from(self.child.id()).expect("pid");
            // SAFETY: the process group we created for this child (httpd-start and nginx).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

// ---- a TLS client --------------------------------------------------------------------------------------------------

/// The certificate a new TLS connection to `port` gets, or `None` when the handshake fails.
pub fn served_certificate(port: u16) -> Option<String> {
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-servername",
            "localhost",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client starts (Debian: apt-get install openssl)");
    let mut stdout = child.stdout.take().expect("piped");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
    pem(&text.expect("s_client finished within 10 s"))
}

/// A TLS connection kept open by `openssl s_client`: what it prints arrives line by line.
pub struct Connection {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    seen: String,
}

impl Connection {
    /// Connects and waits for the handshake to complete; returns the connection and the certificate it got.
    pub fn open(port: u16) -> (Self, String) {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{port}"),
                "-servername",
                "localhost",
                "-nocommands",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("openssl s_client starts");
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut conn = Connection {
            child,
            stdin,
            lines,
            seen: String::new(),
        };
        // s_client prints the session summary once the handshake is done; it ends with the verify result.
        conn.read_until("Verify return code", Duration::from_secs(10));
        let cert = pem(&conn.seen).expect("the handshake printed the server's certificate");
        (conn, cert)
    }

    pub fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .expect("write to s_client");
        self.stdin.flush().expect("flush");
    }

    /// Reads lines until one contains `needle`; panics with everything seen when the connection ends first or
    /// the time runs out.
    pub fn read_until(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if found {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no {needle:?} within {within:?}; got:\n{}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the connection ended before {needle:?}; got:\n{}",
                        self.seen
                    )
                }
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
