//! Every kind of answer the app makes carries each security header, and the request id, exactly once: a header
//! sent twice is read by browsers as one comma-joined value (an invalid policy for most of them).

use app::http::security_headers::SECURITY_HEADERS;
use serde_json::json;

use crate::csrf_cookie::{form_token, post_form};
use crate::helpers::{TestConfig, spawn_app_with};

#[tokio::test]
async fn every_kind_of_answer_has_each_security_header_exactly_once() {
    let token = "headers-token-0123456789";
    let app = spawn_app_with(
        TestConfig::new()
            .await
            .set("API_TOKEN", token)
            .set("QUEUE_MAX_BACKLOG", "1"),
    )
    .await;
    let bearer = format!("Bearer {token}");
    let api = |method: reqwest::Method, path: &str| {
        app.client
            .request(method, app.url(path))
            .header("authorization", &bearer)
    };
    let task = json!({"kind": "sleep", "payload": {"ms": 1}});
    let (_, csrf) = form_token(&app, true).await;

    let mut answers = vec![
        (
            "the page over HTTPS",
            app.client
                .get(app.url("/"))
                .header("x-forwarded-proto", "https"),
        ),
        ("202", api(reqwest::Method::POST, "/api/tasks").json(&task)),
        (
            "503 queue_full",
            api(reqwest::Method::POST, "/api/tasks").json(&task),
        ),
        ("401", app.client.get(app.url("/api/tasks"))),
        (
            "422",
            api(reqwest::Method::POST, "/api/tasks").json(&json!({"kind": "nope"})),
        ),
        ("404", app.client.get(app.url("/nowhere"))),
        (
            "400 refused Host",
            app.client.get(app.url("/")).header("host", "evil.test"),
        ),
        ("healthz", app.client.get(app.url("/healthz"))),
        ("readyz", app.client.get(app.url("/readyz"))),
        (
            "metrics",
            app.client.get(format!("{}/metrics", app.metrics_address)),
        ),
    ];
    let mut seen = Vec::new();
    for (what, request) in answers.drain(..) {
        seen.push((what, request.send().await.expect("answered")));
    }
    seen.push((
        "the form, refused (full)",
        post_form(&app, true, &format!("__Host-csrftoken={csrf}"), &csrf).await,
    ));
    let statuses: Vec<u16> = seen.iter().map(|(_, r)| r.status().as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 202, 503, 401, 422, 404, 400, 200, 200, 200, 503]
    );

    for (what, response) in &seen {
        for (name, _) in SECURITY_HEADERS {
            let count = response.headers().get_all(name).iter().count();
            assert_eq!(count, 1, "{what}: {name} sent {count} times");
        }
        if *what != "metrics" {
            let count = response.headers().get_all("x-request-id").iter().count();
            assert_eq!(count, 1, "{what}: x-request-id sent {count} times");
        }
    }
    for (what, response) in &seen {
        let once = |name: &str| response.headers().get_all(name).iter().count() == 1;
        match response.status().as_u16() {
            503 => assert!(once("retry-after"), "{what}"),
            401 => assert!(once("www-authenticate"), "{what}"),
            _ => {}
        }
    }
}
