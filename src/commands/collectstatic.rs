//! `app collectstatic DIR` (the sample's staticbuilder): every asset under its logical and its hashed name, a
//! `.gz` sibling for text formats (nginx `gzip_static`), and `manifest.json`. Output is byte-for-byte
//! reproducible (sorted manifest, gzip without timestamps), so the Nix `static` output is deterministic.
//! No `.br`: a brotli encoder would add a large dependency for a few hundred bytes saved on a sample's assets.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flate2::{Compression, GzBuilder};

use crate::assets::Assets;

#[derive(Debug, Default)]
pub struct Collected {
    pub files: Vec<PathBuf>,
}

/// Writes the embedded assets into `dir` and says how many files it wrote.
pub fn run(dir: &Path) -> ExitCode {
    match collect(&Assets::embedded(), dir) {
        Ok(collected) => {
            println!(
                "{} files written to {}",
                collected.files.len(),
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("collectstatic failed: {err}");
            ExitCode::FAILURE
        }
    }
}

pub fn collect(assets: &Assets, dir: &Path) -> std::io::Result<Collected> {
    let mut collected = Collected::default();
    for asset in assets.iter() {
        for name in [&asset.logical, &asset.hashed] {
            let path = dir.join(name);
            write(&path, asset.bytes)?;
            collected.files.push(path.clone());
            if asset.compressible() {
                let gz_path = PathBuf::from(format!("{}.gz", path.display()));
                write(&gz_path, &gzip(asset.bytes)?)?;
                collected.files.push(gz_path);
            }
        }
    }
    let manifest = serde_json::to_vec_pretty(&assets.manifest())?;
    let manifest_path = dir.join("manifest.json");
    write(&manifest_path, &manifest)?;
    collected.files.push(manifest_path);
    Ok(collected)
}

fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, bytes)
}

/// Deterministic gzip: mtime 0 and no file name in the header.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}
