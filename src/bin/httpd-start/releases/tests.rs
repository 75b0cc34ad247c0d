use std::path::Path;
use std::time::{Duration, SystemTime};

use super::{bridge, hashed_files};

/// A release's collected static files: the hashed names given (each with a `.gz`), plus unhashed ones.
fn collected(dir: &Path, hashed: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for name in hashed {
        std::fs::write(dir.join(name), format!("body of {name}")).unwrap();
        std::fs::write(dir.join(format!("{name}.gz")), "gz").unwrap();
    }
    std::fs::write(dir.join("app.css"), "unhashed").unwrap();
    std::fs::write(dir.join("manifest.json"), "{}").unwrap();
}

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + seconds)
}

fn shared_files(shared: &Path) -> Vec<String> {
    hashed_files(&shared.join("static"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn only_content_hashed_names_and_their_gz_are_bridged() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    collected(&image, &["app.0123abcd.css", "logo.deadbeef.svg"]);
    std::fs::create_dir_all(image.join("fonts")).unwrap();
    std::fs::write(image.join("fonts/x.00ff00ff.woff2"), "font").unwrap();
    std::fs::write(image.join("not.0123abcz.css"), "not hex").unwrap();
    std::fs::write(image.join("short.0123abc.css"), "7 digits").unwrap();

    let shared = tmp.path().join("shared");
    let done = bridge(&image, &shared, 2, at(0)).unwrap();
    assert_eq!(done.files, 5);
    assert_eq!(
        shared_files(&shared),
        [
            "app.0123abcd.css",
            "app.0123abcd.css.gz",
            "fonts/x.00ff00ff.woff2",
            "logo.deadbeef.svg",
            "logo.deadbeef.svg.gz"
        ]
    );
    assert!(!shared.join("static/app.css").exists());
    assert!(!shared.join("static/manifest.json").exists());
    assert_eq!(
        std::fs::read_to_string(shared.join("static/app.0123abcd.css")).unwrap(),
        "body of app.0123abcd.css"
    );
}

#[test]
fn a_release_is_kept_for_the_configured_number_of_later_releases() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let releases = ["11111111", "22222222", "33333333", "44444444"];
    for (n, hash) in releases.iter().enumerate() {
        let image = tmp.path().join(format!("image-{n}"));
        // Every release has the same logo and its own CSS.
        collected(&image, &[&format!("app.{hash}.css"), "logo.deadbeef.svg"]);
        let done = bridge(&image, &shared, 2, at(n as u64)).unwrap();
        assert_eq!(done.kept_releases, (n + 1).min(3));
        let present: Vec<bool> = releases
            .iter()
            .map(|h| shared.join(format!("static/app.{h}.css")).exists())
            .collect();
        let expected: Vec<bool> = (0..releases.len()).map(|i| i <= n && n - i <= 2).collect();
        assert_eq!(present, expected, "after release {n}");
        assert!(shared.join("static/logo.deadbeef.svg").exists());
    }
    assert_eq!(
        std::fs::read_dir(shared.join("releases")).unwrap().count(),
        3
    );
}

#[test]
fn a_release_started_again_moves_to_the_front() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let c = tmp.path().join("c");
    collected(&a, &["app.aaaaaaaa.css"]);
    collected(&b, &["app.bbbbbbbb.css"]);
    collected(&c, &["app.cccccccc.css"]);
    let first = bridge(&a, &shared, 1, at(0)).unwrap();
    bridge(&b, &shared, 1, at(1)).unwrap();
    // A rollback to a: the same release id, now the newest; b is the one before it.
    let again = bridge(&a, &shared, 1, at(2)).unwrap();
    assert_eq!(first.release, again.release);
    bridge(&c, &shared, 1, at(3)).unwrap();
    assert!(shared.join("static/app.aaaaaaaa.css").exists());
    assert!(!shared.join("static/app.bbbbbbbb.css").exists());
    assert!(shared.join("static/app.cccccccc.css").exists());
}

#[test]
fn keep_zero_serves_only_the_current_release_and_removes_left_over_temp_files() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    collected(&a, &["app.aaaaaaaa.css"]);
    collected(&b, &["app.bbbbbbbb.css"]);
    bridge(&a, &shared, 0, at(0)).unwrap();
    // A copy that died half-way, long ago.
    let stale = shared.join("static/app.cccccccc.css.77.tmp");
    std::fs::write(&stale, "half").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(at(0))
        .unwrap();
    let done = bridge(&b, &shared, 0, at(3600)).unwrap();
    assert_eq!(done.kept_releases, 1);
    assert_eq!(
        shared_files(&shared),
        ["app.bbbbbbbb.css", "app.bbbbbbbb.css.gz"]
    );
    assert!(!stale.exists());
    assert_eq!(done.removed_files, 3);
}

#[test]
fn a_read_only_shared_directory_is_an_error_not_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("image");
    collected(&image, &["app.aaaaaaaa.css"]);
    // A file where the directory should be: creating DIR/static fails for root too.
    let shared = tmp.path().join("shared");
    std::fs::write(&shared, "not a directory").unwrap();
    assert!(bridge(&image, &shared, 2, at(0)).is_err());
}

#[test]
fn the_directories_come_from_the_marked_lines_of_the_config() {
    let httpd =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/httpd.conf")).unwrap();
    assert_eq!(
        super::configured(&httpd),
        Some(("/srv/static/".into(), "/srv/static-releases".into()))
    );
    let edge =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/edge.conf")).unwrap();
    assert_eq!(super::configured(&edge), None);
}
