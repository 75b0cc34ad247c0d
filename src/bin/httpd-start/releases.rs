//! Assets of earlier releases ("asset bridging", as Kamal calls it). A page loaded before a deploy asks for its
//! release's content-hashed CSS and JS after it, and the new image has only its own. So at start, `httpd-start run`
//! copies its image's hashed files into a directory the httpd replicas share (a volume: `static-releases` in
//! compose/live.yml and compose/stack.yml), which nginx falls back to (`@earlier_releases` in nginx/httpd.conf),
//! records which files this release has, and removes what no release among the newest `STATIC_KEEP_RELEASES` + 1
//! (this one and the ones before it) has.
//!
//! The shared directory is the `root` of `@earlier_releases`, so the URI /static/x is DIR/static/x:
//! ```text
//! DIR/static/<hashed name>[.gz]   the files, one copy per name (a hashed name says its content)
//! DIR/releases/<id>               a release's hashed names, one per line; its mtime is the release's last start
//! ```
//! A release's id is a hash of its sorted names, so the same assets deployed again (a rollback) are the same
//! release, moved to the front. Every write is a temporary file and a rename: replicas starting together, and nginx
//! reading meanwhile, never see half a file. Unhashed names (`app.css`) are never bridged: they always answer with
//! the running release's file.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A temporary file older than this is left over from a start that died; younger ones are another replica's copy
/// in progress, which pruning must not remove.
const STALE_TEMP: Duration = Duration::from_secs(600);

/// What one start did, for its log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Bridged {
    pub release: String,
    pub files: usize,
    pub kept_releases: usize,
    pub removed_files: usize,
}

/// The directories a config names: the image's collected files (the `alias` of the line marked `# SUBST:static`)
/// and the shared one (the `root` of the line marked `# SUBST:static-releases`); `None` when it has no such pair
/// (the edge's config, or a test's).
pub fn configured(config: &str) -> Option<(PathBuf, PathBuf)> {
    let argument = |marker: &str, directive: &str| {
        config
            .lines()
            .find(|line| crate::render::marker(line) == Some(marker))?
            .trim_start()
            .strip_prefix(directive)?
            .split(';')
            .next()
            .map(|path| PathBuf::from(path.trim()))
    };
    Some((
        argument("static", "alias ")?,
        argument("static-releases", "root ")?,
    ))
}

/// Copies the hashed files under `static_dir` into `shared`, records the release (as started at `now`) and prunes
/// to the newest `keep + 1` releases.
pub fn bridge(static_dir: &Path, shared: &Path, keep: u16, now: SystemTime) -> io::Result<Bridged> {
    let names = hashed_files(static_dir)?;
    let files_dir = shared.join("static");
    let releases_dir = shared.join("releases");
    for name in &names {
        let target = files_dir.join(name);
        if !target.exists() {
            copy_atomically(&static_dir.join(name), &target)?;
        }
    }
    let release = release_id(&names);
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    write_atomically(&releases_dir.join(&release), list.as_bytes(), now)?;

    let kept = newest_releases(&releases_dir, usize::from(keep) + 1)?;
    let mut wanted = BTreeSet::new();
    for id in &kept {
        let text = std::fs::read_to_string(releases_dir.join(id))?;
        wanted.extend(text.lines().map(str::to_string));
    }
    for entry in std::fs::read_dir(&releases_dir)? {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if !kept.contains(&id) && !is_young_temp(&entry, now) {
            remove_if_present(&entry.path())?;
        }
    }
    let mut removed_files = 0;
    for name in relative_files(&files_dir)? {
        let path = files_dir.join(&name);
        if wanted.contains(&name) {
            continue;
        }
        if name.ends_with(".tmp") && is_young(&path, now) {
            continue;
        }
        remove_if_present(&path)?;
        removed_files += 1;
    }
    Ok(Bridged {
        release,
        files: names.len(),
        kept_releases: kept.len(),
        removed_files,
    })
}

/// The content-hashed files under `dir` (relative paths with `/`), as `app collectstatic` names them:
/// `<stem>.<8 hex digits>.<extension>`, and their `.gz` siblings. The same rule as nginx/httpd.conf's long-lived
/// Cache-Control.
pub fn hashed_files(dir: &Path) -> io::Result<BTreeSet<String>> {
    Ok(relative_files(dir)?
        .into_iter()
        .filter(|name| is_hashed(name))
        .collect())
}

fn is_hashed(path: &str) -> bool {
    let file = path.rsplit('/').next().unwrap_or(path);
    let file = file.strip_suffix(".gz").unwrap_or(file);
    let mut parts = file.rsplit('.');
    let (Some(ext), Some(hash), Some(stem)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !stem.is_empty()
        && !ext.is_empty()
        && ext.bytes().all(|b| b.is_ascii_alphanumeric())
        && hash.len() == 8
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// FNV-1a (64 bit) of the sorted names: stable across builds and platforms, unlike std's hasher.
fn release_id(names: &BTreeSet<String>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in names.iter().flat_map(|n| n.bytes().chain([b'\n'])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The ids of the `n` most recently started releases (temporary files are not releases).
fn newest_releases(dir: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut releases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let id = entry.file_name().to_string_lossy().into_owned();
        if id.ends_with(".tmp") {
            continue;
        }
        releases.push((entry.metadata()?.modified()?, id));
    }
    releases.sort_by(|a, b| b.cmp(a));
    Ok(releases.into_iter().take(n).map(|(_, id)| id).collect())
}

/// Every regular file under `dir`, as a path relative to it with `/` separators; none when `dir` is missing.
fn relative_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let entries = match std::fs::read_dir(dir.join(&relative)) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file()
                && let Some(name) = path.to_str()
            {
                out.push(name.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    Ok(out)
}

fn temp_path(target: &Path) -> PathBuf {
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    PathBuf::from(tmp)
}

fn copy_atomically(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = temp_path(to);
    std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)
}

fn write_atomically(to: &Path, bytes: &[u8], modified: SystemTime) -> io::Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = temp_path(to);
    std::fs::write(&tmp, bytes)?;
    std::fs::File::options()
        .write(true)
        .open(&tmp)?
        .set_modified(modified)?;
    std::fs::rename(&tmp, to)
}

fn is_young(path: &Path, now: SystemTime) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|modified| now.duration_since(modified).unwrap_or_default() < STALE_TEMP)
}

fn is_young_temp(entry: &std::fs::DirEntry, now: SystemTime) -> bool {
    entry.file_name().to_string_lossy().ends_with(".tmp") && is_young(&entry.path(), now)
}

/// Another replica may have removed it first.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
