//! The real `app` binary as a child process, with exactly the variables a test gives it
//! (`helpers::app_command` clears the rest): long-running ones (`serve`, `tasks`) with their output collected,
//! and one-shot commands with their status, output and duration.

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::task::JoinHandle;

use crate::helpers::{app_command, eventually};
use crate::servers::free_port;

/// A test's variables with concrete loopback ports: a child process cannot report the port it got for `:0`.
pub fn child_vars(vars: &HashMap<String, String>) -> HashMap<String, String> {
    let mut vars = vars.clone();
    vars.insert("LISTEN_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    vars.insert("METRICS_ADDR".into(), format!("127.0.0.1:{}", free_port()));
    vars
}

pub fn vars_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A long-running `app` child (`serve`, `tasks`); its stdout and stderr lines are collected.
pub struct AppProcess {
    name: String,
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

fn collect_lines(
    stream: impl AsyncRead + Unpin + Send + 'static,
    lines: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(stream).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.lock().unwrap().push(line);
        }
    })
}

impl AppProcess {
    pub fn spawn(vars: &HashMap<String, String>, args: &[&str]) -> Self {
        let mut cmd = app_command(vars, args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("the app binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect_lines(child.stdout.take().expect("piped"), lines.clone()),
            collect_lines(child.stderr.take().expect("piped"), lines.clone()),
        ];
        Self {
            name: format!("app {}", args.join(" ")),
            child,
            lines,
            readers,
        }
    }

    pub fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("the child is still running") as i32;
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    pub fn output(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Waits until an output line contains every one of `needles`.
    pub async fn wait_for_line(&mut self, needles: &[&str], within: Duration) {
        let what = format!("`{}` logs a line with {needles:?}", self.name);
        let lines = self.lines.clone();
        self.eventually(&what, within, || async {
            let lines = lines.lock().unwrap();
            let found = lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
            found.then_some(()).ok_or("no such line")
        })
        .await;
    }

    /// [`eventually`] while this child runs: fails at once, with its output, if it exits, and shows its output
    /// with the last thing seen otherwise.
    pub async fn eventually<T, E, F, Fut>(
        &mut self,
        what: &str,
        within: Duration,
        mut probe: F,
    ) -> T
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let child = &mut self.child;
        let (name, lines) = (&self.name, &self.lines);
        let output = || lines.lock().unwrap().join("\n");
        eventually(what, within, || {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "`{name}` exited early ({status}); its output:\n{}",
                    output()
                );
            }
            let answer = probe();
            async move {
                answer
                    .await
                    .map_err(|seen| format!("{seen}\n`{name}` output:\n{}", output()))
            }
        })
        .await
        .0
    }

    /// Waits for the exit (and for the rest of its output).
    pub async fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait for the child"),
            Err(_) => panic!(
                "`{}` did not exit within {limit:?}; its output:\n{}",
                self.name,
                self.output()
            ),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
        }
        status
    }

    /// SIGTERM, then a clean exit (status 0) within the test `SHUTDOWN_TIMEOUT` (10 s) and a margin.
    pub async fn terminate(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.exit_within(Duration::from_secs(15)).await;
        assert_eq!(
            status.code(),
            Some(0),
            "`{}` after SIGTERM: {status}; output:\n{}",
            self.name,
            self.output()
        );
    }
}

/// A one-shot command: its status, stdout, stderr and how long it took.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Asserts that stdout holds every one of `texts`.
    pub fn assert_stdout_has(&self, texts: &[&str]) {
        assert_holds("stdout", &self.stdout, texts);
    }

    /// Asserts that stderr holds every one of `texts`.
    pub fn assert_stderr_has(&self, texts: &[&str]) {
        assert_holds("stderr", &self.stderr, texts);
    }
}

fn assert_holds(name: &str, output: &str, texts: &[&str]) {
    for text in texts {
        assert!(output.contains(text), "no `{text}` in {name}:\n{output}");
    }
}

pub async fn run(vars: &HashMap<String, String>, args: &[&str], limit: Duration) -> Finished {
    let started = Instant::now();
    let output = tokio::time::timeout(limit, app_command(vars, args).output())
        .await
        .unwrap_or_else(|_| panic!("`app {}` did not finish within {limit:?}", args.join(" ")))
        .expect("the app binary runs");
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The JSON log lines among `text`'s lines.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// Secrets the tests give children, to look for in what they print.
pub const PG_SECRET: &str = "pg-pass-hunter2-e1f3";
pub const REDIS_SECRET: &str = "redis-pass-hunter2-77c0";
pub const KEY_SECRET: &str = "secret-key-hunter2-0123456789abcdef-0123456789";

pub fn assert_no_secret(finished: &Finished, secrets: &[&str]) {
    let all = finished.all();
    for secret in secrets {
        assert!(!all.contains(secret), "a secret leaked: {all}");
    }
}
