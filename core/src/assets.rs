//! The static assets, compiled into the binary, with their content-hashed names (the manifest).
//!
//! Both `collectstatic` and the status page derive names from the same bytes, so the page always links the files
//! nginx serves.

use std::collections::BTreeMap;

use include_dir::{Dir, include_dir};
use sha2::{Digest, Sha256};

static STATIC: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../static");

#[derive(Debug, Clone)]
pub struct Asset {
    /// Path under `static/`, e.g. `app.css`.
    pub logical: String,
    /// The same path with 8 hex digits of the content's SHA-256 before the extension, e.g. `app.3f9c2e1a.css`.
    pub hashed: String,
    pub bytes: &'static [u8],
}

impl Asset {
    pub fn content_type(&self) -> &'static str {
        content_type(&self.logical)
    }

    /// Text formats worth a precompressed `.gz` sibling.
    pub fn compressible(&self) -> bool {
        matches!(
            extension(&self.logical),
            "css" | "js" | "svg" | "json" | "txt" | "html" | "map"
        )
    }
}

/// Every embedded asset, by logical path.
#[derive(Debug, Clone)]
pub struct Assets {
    by_logical: BTreeMap<String, Asset>,
}

impl Assets {
    pub fn embedded() -> Self {
        let mut by_logical = BTreeMap::new();
        collect(&STATIC, &mut by_logical);
        Self { by_logical }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Asset> {
        self.by_logical.values()
    }

    /// The URL of an asset under its hashed name (falls back to the logical name for an unknown path).
    pub fn url(&self, logical: &str) -> String {
        let name = self
            .by_logical
            .get(logical)
            .map_or(logical, |a| a.hashed.as_str());
        format!("/static/{name}")
    }

    /// Finds an asset by its hashed or its logical name.
    pub fn find(&self, name: &str) -> Option<&Asset> {
        self.by_logical
            .get(name)
            .or_else(|| self.by_logical.values().find(|a| a.hashed == name))
    }

    /// `{"paths": {logical: hashed}, "version": 1}`, keys sorted, so equal inputs give equal bytes.
    pub fn manifest(&self) -> serde_json::Value {
        let paths: BTreeMap<&str, &str> = self
            .by_logical
            .values()
            .map(|a| (a.logical.as_str(), a.hashed.as_str()))
            .collect();
        serde_json::json!({ "version": 1, "paths": paths })
    }
}

fn collect(dir: &'static Dir<'static>, out: &mut BTreeMap<String, Asset>) {
    for file in dir.files() {
        let logical = file.path().to_string_lossy().replace('\\', "/");
        let hashed = hashed_name(&logical, file.contents());
        out.insert(
            logical.clone(),
            Asset {
                logical,
                hashed,
                bytes: file.contents(),
            },
        );
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

/// `dir/name.ext` → `dir/name.<8 hex>.ext`.
pub fn hashed_name(logical: &str, bytes: &[u8]) -> String {
    let digest = hex::encode(&Sha256::digest(bytes)[..4]);
    let (dir, file) = logical
        .rsplit_once('/')
        .map_or(("", logical), |(d, f)| (d, f));
    let hashed_file = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.{digest}.{ext}"),
        _ => format!("{file}.{digest}"),
    };
    if dir.is_empty() {
        hashed_file
    } else {
        format!("{dir}/{hashed_file}")
    }
}

fn extension(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(_, ext)| ext)
}

pub fn content_type(path: &str) -> &'static str {
    match extension(path) {
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_keep_directory_and_extension() {
        assert_eq!(hashed_name("app.css", b"x"), "app.2d711642.css");
        assert_eq!(hashed_name("img/logo.svg", b"x"), "img/logo.2d711642.svg");
        assert_eq!(hashed_name("LICENSE", b"x"), "LICENSE.2d711642");
    }

    #[test]
    fn the_page_assets_are_embedded() {
        let assets = Assets::embedded();
        for name in ["app.css", "app.js", "logo.svg"] {
            let asset = assets
                .find(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(assets.url(name).starts_with("/static/"));
            assert_eq!(
                assets.find(&asset.hashed).map(|a| &a.logical),
                Some(&asset.logical)
            );
        }
    }
}
