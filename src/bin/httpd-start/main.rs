//! `httpd-start`: the httpd image's entry point. It renders the nginx config from the environment (the lines
//! marked `# SUBST:<name>`, see render.rs) into `$TMPDIR/<basename>` (/tmp in the image: the root filesystem is
//! read-only) and runs nginx on it.
//!
//!   httpd-start run CONFIG      render, then run `nginx -e stderr -c <rendered>` as a child (supervise.rs)
//!   httpd-start check CONFIG    `nginx -t -q -e stderr -c <rendered>` (rendering first when absent): healthchecks
//!   httpd-start render CONFIG   print the rendered config (tests, Nix checks)
//!   httpd-start hold            wait for a stop signal: the edge's network namespace holder (hold.rs)
//!   httpd-start listening PORT...  whether something listens on those ports of 127.0.0.1 (its healthcheck)
//!
//! Exit status: 2 for a usage error or invalid settings (every problem listed, one line each), 1 when the config or
//! a TLS file cannot be read or nginx cannot start, else nginx's own (128 + signal when it was killed).
//! `NGINX_BIN` names the nginx binary (default /bin/nginx, the image's).
//!
//! It does not use the app library: the httpd image must not carry the app (nix/images.nix).

mod drain;
mod hold;
mod releases;
mod render;
mod settings;
mod supervise;
mod tls;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use render::{Tls, has_marker, render};
use settings::Settings;

const USAGE: &str = "usage: httpd-start run|check|render CONFIG, httpd-start hold, or httpd-start listening PORT...";

/// One line on stderr, prefixed so that it stands out among nginx's own lines.
pub fn log(line: &str) {
    eprintln!("httpd-start: {line}");
}

/// What every subcommand works on.
pub struct Job {
    /// The config as shipped, with its markers.
    pub config: PathBuf,
    /// Where the rendered copy goes (and what nginx reads).
    pub rendered: PathBuf,
    pub settings: Settings,
    pub nginx: PathBuf,
}

impl Job {
    fn source(&self) -> Result<String, String> {
        std::fs::read_to_string(&self.config)
            .map_err(|err| format!("cannot read {}: {err}", self.config.display()))
    }

    fn render(&self) -> Result<(String, Tls), String> {
        let tls = tls::state(&self.settings);
        Ok((render(&self.source()?, &self.settings, tls), tls))
    }

    /// Renders into `rendered` through a temporary file and a rename, so nginx (a reload, or `check` running at the
    /// same moment) never reads a half-written config. Returns the TLS state the file was rendered with.
    pub fn render_to_file(&self) -> Result<Tls, String> {
        let (text, tls) = self.render()?;
        let mut tmp = self.rendered.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &self.rendered))
            .map_err(|err| format!("cannot write {}: {err}", self.rendered.display()))?;
        Ok(tls)
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match args.first().and_then(|a| a.to_str()) {
        Some("hold") => return ExitCode::from(hold::run(&args[1..])),
        Some("listening") => return ExitCode::from(hold::listening(&args[1..])),
        _ => {}
    }
    let [command, config] = args.as_slice() else {
        log(USAGE);
        return ExitCode::from(2);
    };
    let Some(name) = Path::new(config).file_name() else {
        log(&format!(
            "{}: not a file name; {USAGE}",
            config.to_string_lossy()
        ));
        return ExitCode::from(2);
    };
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(problems) => {
            for problem in problems {
                log(&problem);
            }
            return ExitCode::from(2);
        }
    };
    let job = Job {
        config: PathBuf::from(config),
        rendered: std::env::temp_dir().join(name),
        settings,
        nginx: std::env::var_os("NGINX_BIN")
            .map_or_else(|| PathBuf::from("/bin/nginx"), PathBuf::from),
    };
    ExitCode::from(match command.to_str() {
        Some("run") => run(&job),
        Some("check") => check(&job),
        Some("render") => print(&job),
        _ => {
            log(USAGE);
            2
        }
    })
}

fn run(job: &Job) -> u8 {
    let source = match job.source() {
        Ok(source) => source,
        Err(err) => {
            log(&err);
            return 1;
        }
    };
    let watch = has_marker(&source, "tls-certificate");
    // Without ACME a missing certificate is a deployment mistake: say which file, once, before nginx would fail
    // with a longer message (or, for the key, an unrelated-looking one).
    if watch && !job.settings.tls_acme {
        let problems = tls::problems(&job.settings);
        if !problems.is_empty() {
            for problem in problems {
                log(&problem);
            }
            return 1;
        }
    }
    share_assets(job, &source);
    supervise::run(job, watch)
}

/// Earlier releases' hashed assets (releases.rs). A failure costs only those, never the start: logged, then nginx
/// serves this release's files as ever.
fn share_assets(job: &Job, source: &str) {
    let Some((static_dir, shared)) = releases::configured(source) else {
        return;
    };
    let keep = job.settings.keep_releases;
    match releases::bridge(&static_dir, &shared, keep, std::time::SystemTime::now()) {
        Ok(done) => log(&format!(
            "release {}: {} hashed files in {}, {} of the last {} releases kept, {} files removed",
            done.release,
            done.files,
            shared.display(),
            done.kept_releases,
            u32::from(keep) + 1,
            done.removed_files
        )),
        Err(err) => log(&format!(
            "earlier releases' assets are not kept: {}: {err} (a writable volume belongs there)",
            shared.display()
        )),
    }
}

fn check(job: &Job) -> u8 {
    if !job.rendered.exists()
        && let Err(err) = job.render_to_file()
    {
        log(&err);
        return 1;
    }
    match std::process::Command::new(&job.nginx)
        .args(["-t", "-q", "-e", "stderr", "-c"])
        .arg(&job.rendered)
        .status()
    {
        Ok(status) => supervise::exit_code(status),
        Err(err) => {
            log(&format!("cannot run {}: {err}", job.nginx.display()));
            1
        }
    }
}

fn print(job: &Job) -> u8 {
    match job.render() {
        Ok((text, _)) => match std::io::stdout().lock().write_all(text.as_bytes()) {
            Ok(()) => 0,
            Err(err) => {
                log(&format!("cannot write to stdout: {err}"));
                1
            }
        },
        Err(err) => {
            log(&err);
            1
        }
    }
}
