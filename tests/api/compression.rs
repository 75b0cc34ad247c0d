//! Response compression: only bodies worth it (above 1 KiB) are gzipped, and only when the client asks.

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_page_is_gzipped_on_request_but_a_small_json_body_is_not() {
    let app = spawn_app().await;
    let plain = app.get("/").await;
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("content-encoding").is_none());
    let page_len = plain.bytes().await.unwrap().len();
    assert!(
        page_len > 1024,
        "the page is {page_len} bytes: the test needs one above the threshold"
    );

    let gzipped = app.get_with("/", "accept-encoding", "gzip").await;
    assert_eq!(gzipped.status(), 200);
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    assert!(gzipped.bytes().await.unwrap().len() < page_len);

    // About 80 bytes: above tower-http's own 32-byte floor, below the app's 1 KiB one.
    let small = app.get_with("/readyz", "accept-encoding", "gzip").await;
    assert_eq!(small.status(), 200);
    assert!(
        small.headers().get("content-encoding").is_none(),
        "a small JSON body was compressed"
    );
    let body = small.text().await.unwrap();
    assert!(
        (33..1024).contains(&body.len()) && body.contains("\"ready\""),
        "{body}"
    );
}
