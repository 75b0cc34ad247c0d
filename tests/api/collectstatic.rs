//! `app collectstatic`: hashed names, a manifest and gzip siblings, byte-identical on a second run.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::child::run;

fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[tokio::test]
async fn collectstatic_writes_hashed_names_a_manifest_and_valid_gzip_reproducibly() {
    let out = tempfile::tempdir().unwrap();
    let first = out.path().join("first");
    let finished = run(
        &HashMap::new(),
        &["collectstatic", first.to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    let files = read_tree(&first);

    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let paths = manifest["paths"].as_object().expect("manifest.paths");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let sources = read_tree(&source);
    assert_eq!(
        paths.keys().cloned().collect::<Vec<_>>(),
        sources.keys().cloned().collect::<Vec<_>>(),
        "the manifest maps every file of static/"
    );
    for (logical, hashed) in paths {
        let hashed = hashed.as_str().unwrap();
        let original = &sources[logical];
        // app.css → app.<first 8 hex digits of the SHA-256 of the content>.css
        let (stem, ext) = logical.rsplit_once('.').unwrap();
        let digest = hex::encode(&Sha256::digest(original)[..4]);
        assert_eq!(hashed, format!("{stem}.{digest}.{ext}"));
        assert_eq!(&files[logical], original, "{logical}");
        assert_eq!(&files[hashed], original, "{hashed}");
        for name in [logical.as_str(), hashed] {
            let gz = files
                .get(&format!("{name}.gz"))
                .unwrap_or_else(|| panic!("no {name}.gz"));
            assert_eq!(&gz[..2], &[0x1f, 0x8b], "{name}.gz is gzip");
            let mut decoded = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut decoded)
                .unwrap_or_else(|e| panic!("{name}.gz does not decode: {e}"));
            assert_eq!(&decoded, original, "{name}.gz decodes to the original");
        }
    }
    // Nothing else is written: each asset twice, each with a .gz, plus the manifest.
    assert_eq!(files.len(), paths.len() * 4 + 1, "{:?}", files.keys());

    let second = out.path().join("second");
    let finished = run(
        &HashMap::new(),
        &["collectstatic", second.to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(
        read_tree(&second) == files,
        "a second run gives byte-identical files"
    );

    // An unwritable destination is an error, not a silent success.
    let blocker = out.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let finished = run(
        &HashMap::new(),
        &["collectstatic", blocker.join("sub").to_str().unwrap()],
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(finished.status.code(), Some(1), "{}", finished.all());
}
