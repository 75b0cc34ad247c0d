//! Throwaway PostgreSQL and Redis servers for the tests.
//!
//! With `DATABASE_URL` and `REDIS_URL` set, the shared servers are those (the URL's database must allow
//! `CREATE DATABASE`). Otherwise the harness starts its own from the binaries on PATH (Debian's
//! `/usr/lib/postgresql/*/bin` is searched too) in a temp dir on free loopback ports, and stops them when the test
//! binary exits. This also works inside a Nix build sandbox: no network but loopback, no fixed port, no HOME.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const INSTALL_HINT: &str = "the integration tests need PostgreSQL and Redis server binaries: \
    install them (Debian/Ubuntu: `apt-get install postgresql redis-server`; Nix: `nix develop`), \
    or point DATABASE_URL and REDIS_URL at running servers";

/// Every child and directory still alive, for the exit hook.
static LIVE: Mutex<Vec<(u32, Option<PathBuf>)>> = Mutex::new(Vec::new());

extern "C" fn stop_everything() {
    let live = LIVE
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    for (pid, dir) in live {
        // SIGINT is PostgreSQL's "fast" shutdown and a clean stop for redis-server.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && unsafe { libc::kill(pid as i32, 0) } == 0 {
            let mut status = 0;
            unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        if let Some(dir) = dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn register(pid: u32, dir: Option<PathBuf>) {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| unsafe {
        libc::atexit(stop_everything);
    });
    if let Ok(mut live) = LIVE.lock() {
        live.push((pid, dir));
    }
}

fn unregister(pid: u32) {
    if let Ok(mut live) = LIVE.lock() {
        live.retain(|(p, _)| *p != pid);
    }
}

/// Stops a server with `signal` and waits until it is gone; the exit hook then forgets it.
fn stop_child(child: &mut Option<Child>, signal: i32) {
    if let Some(mut child) = child.take() {
        unsafe { libc::kill(child.id() as i32, signal) };
        let _ = child.wait();
        unregister(child.id());
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn find_binary(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .collect::<Vec<_>>()
    });
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .collect();
    debian.sort();
    debian.reverse();
    on_path.chain(debian).find(|p| p.is_file())
}

/// PostgreSQL refuses to run as root: when we are root, the server runs as `postgres` (or `nobody`).
fn unprivileged_ids() -> Option<(u32, u32)> {
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let cname = std::ffi::CString::new(name).ok()?;
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            return Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
        }
    }
    panic!("running as root and neither a `postgres` nor a `nobody` user exists to run PostgreSQL");
}

/// A command that drops to `ids` (when given) and is killed if the thread that started it dies.
fn command(program: &Path, ids: Option<(u32, u32)>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = ids
                && (libc::setgid(gid) != 0 || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            // After setuid, which would clear it: the server dies with the test process, even on a crash.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd
}

fn chown_tree(path: &Path, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        let status = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{gid}"))
            .arg(path)
            .status()
            .expect("chown runs");
        assert!(status.success(), "chown {} failed", path.display());
    }
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    panic!("{what} did not start listening on port {port} within 30 s; its log:\n{log}");
}

fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A PostgreSQL server owned by the tests; it can be stopped and started again on the same port and data.
pub struct TestPostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    ids: Option<(u32, u32)>,
    child: Option<Child>,
}

impl TestPostgres {
    pub fn start() -> Self {
        let initdb =
            find_binary("initdb").unwrap_or_else(|| panic!("`initdb` not found: {INSTALL_HINT}"));
        let bin = initdb
            .parent()
            .expect("initdb has a directory")
            .to_path_buf();
        assert!(
            bin.join("postgres").is_file(),
            "`postgres` not found beside {}: {INSTALL_HINT}",
            initdb.display()
        );
        let ids = unprivileged_ids();
        let dir = temp_dir("app-test-pg");
        chown_tree(&dir, ids);
        let out = command(&initdb, ids)
            .args(["-D"])
            .arg(dir.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            port: free_port(),
            dir,
            bin,
            ids,
            child: None,
        };
        pg.resume();
        pg
    }

    /// Starts the server (again) on the same port and data directory.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        let log = self.dir.join("postgres.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        chown_tree(&log, self.ids);
        let child = command(&self.bin.join("postgres"), self.ids)
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=500",
            ])
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("postgres starts");
        register(child.id(), Some(self.dir.clone()));
        self.child = Some(child);
        wait_for_port(self.port, "PostgreSQL", &log);
        // Accepting TCP is not yet accepting queries (startup recovery): wait for the server to say so.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("ready to accept connections") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL never became ready; its log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Fast shutdown (SIGINT), waiting until the process is gone.
    pub fn stop(&mut self) {
        stop_child(&mut self.child, libc::SIGINT);
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// From the next `pg_reload_conf()`: every role but `postgres` (the admin URL's) logs in with its password
    /// (SCRAM), as in the official image; initdb's `trust` accepts any password.
    pub fn require_passwords(&self) {
        let hba = "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(self.dir.join("data").join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis server owned by the tests, without persistence (a restart loses everything it held).
pub struct TestRedis {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl TestRedis {
    pub fn start() -> Self {
        let bin = find_binary("redis-server")
            .unwrap_or_else(|| panic!("`redis-server` not found: {INSTALL_HINT}"));
        let mut redis = Self {
            port: free_port(),
            dir: temp_dir("app-test-redis"),
            bin,
            child: None,
        };
        redis.resume();
        redis
    }

    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "Redis is already running");
        let log = self.dir.join("redis.log");
        let child = command(&self.bin, None)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--logfile"])
            .arg(&log)
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        register(child.id(), Some(self.dir.clone()));
        self.child = Some(child);
        wait_for_port(self.port, "Redis", &log);
    }

    pub fn stop(&mut self) {
        stop_child(&mut self.child, libc::SIGKILL);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The servers most tests share: from the environment, or started once per test binary.
pub struct SharedServers {
    pub postgres_admin_url: String,
    pub redis_url: String,
}

pub fn shared() -> &'static SharedServers {
    static SHARED: OnceLock<SharedServers> = OnceLock::new();
    SHARED.get_or_init(|| {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(db), Some(redis)) = (from_env("DATABASE_URL"), from_env("REDIS_URL")) {
            return SharedServers {
                postgres_admin_url: db,
                redis_url: redis,
            };
        }
        // Started from a thread that lives as long as the process: the servers' parent-death signal is tied
        // to the thread that spawned them.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("test-servers".into())
            .spawn(move || {
                let started =
                    std::panic::catch_unwind(|| (TestPostgres::start(), TestRedis::start()));
                match started {
                    Ok((pg, redis)) => {
                        let _ = tx.send(Ok((pg.admin_url(), redis.url())));
                        // Keep them (the exit hook stops them) and keep this thread alive.
                        std::mem::forget((pg, redis));
                        loop {
                            std::thread::park();
                        }
                    }
                    Err(panic) => {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_else(|| "unknown error".into());
                        let _ = tx.send(Err(message));
                    }
                }
            })
            .expect("thread starts");
        match rx.recv().expect("the server thread answers") {
            Ok((postgres_admin_url, redis_url)) => SharedServers {
                postgres_admin_url,
                redis_url,
            },
            Err(message) => panic!("{message}"),
        }
    })
}
