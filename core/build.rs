// sqlx::migrate! embeds the files of migrations/ at compile time, but on stable Rust cargo only learns about the
// files that existed at the last build: without this line a newly added migration is silently left out of the
// next incremental build (`cargo sqlx migrate build-script` writes the same line).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
