//! The certificate and key files: whether nginx can load them, and a cheap fingerprint of each to notice a renewal.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;

use crate::render::Tls;
use crate::settings::Settings;

/// Why a TLS file cannot be used, as one line naming the variable, the path and the OS error; `None` when it can
/// be opened and holds something. A read (not only the metadata) so that a file without read permission for the
/// nginx user fails here, at start, rather than in nginx's own config test.
pub fn unreadable(variable: &str, path: &str) -> Option<String> {
    let result = File::open(path).and_then(|mut f| f.read(&mut [0u8; 1]));
    match result {
        Ok(0) => Some(format!("{variable}={path}: the file is empty")),
        Ok(_) => None,
        Err(err) => Some(format!("{variable}={path}: cannot read it: {err}")),
    }
}

/// Both files' problems (cert first), empty when both are usable.
pub fn problems(settings: &Settings) -> Vec<String> {
    [
        ("TLS_CERT_FILE", &settings.tls_cert_file),
        ("TLS_KEY_FILE", &settings.tls_key_file),
    ]
    .into_iter()
    .filter_map(|(variable, path)| unreadable(variable, path))
    .collect()
}

/// What to render: in ACME mode the files may not exist yet (nginx then refuses handshakes until they do); without
/// ACME they are always named, and a missing file is an error found before nginx starts.
pub fn state(settings: &Settings) -> Tls {
    if settings.tls_acme && !problems(settings).is_empty() {
        Tls::Waiting
    } else {
        Tls::Files
    }
}

/// What identifies one version of a file: an ACME client or a secret update replaces it (new inode, by rename) or
/// rewrites it (new mtime or size). Read through symlinks, as nginx reads the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    inode: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// Both files' stamps; `None` for a file that is missing.
pub fn stamps(settings: &Settings) -> [Option<Stamp>; 2] {
    [&settings.tls_cert_file, &settings.tls_key_file].map(|path| stamp(path).ok())
}

fn stamp(path: &str) -> io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        inode: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_an_empty_and_a_good_file() {
        let dir = std::env::temp_dir().join(format!("httpd-start-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        let good = dir.join("good.pem");
        std::fs::write(&empty, "").unwrap();
        std::fs::write(&good, "x").unwrap();
        let line = unreadable("TLS_CERT_FILE", missing.to_str().unwrap()).unwrap();
        assert_eq!(
            line,
            format!(
                "TLS_CERT_FILE={}: cannot read it: No such file or directory (os error 2)",
                missing.display()
            )
        );
        assert!(
            unreadable("TLS_KEY_FILE", empty.to_str().unwrap())
                .unwrap()
                .ends_with("the file is empty")
        );
        assert_eq!(unreadable("TLS_KEY_FILE", good.to_str().unwrap()), None);

        let before = stamp(good.to_str().unwrap()).unwrap();
        std::fs::write(dir.join("new.pem"), "xy").unwrap();
        std::fs::rename(dir.join("new.pem"), &good).unwrap();
        assert_ne!(
            stamp(good.to_str().unwrap()).unwrap(),
            before,
            "a replaced file is noticed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
