use serde_json::Value;

use crate::helpers::{TestConfig, spawn_app, spawn_app_with};

fn cookie_value(response: &reqwest::Response) -> String {
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap();
    pair.strip_prefix("csrftoken=").unwrap().to_string()
}

fn hidden_token(html: &str) -> String {
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn the_status_page_shows_the_services_and_links_hashed_assets() {
    let app = spawn_app().await;
    let worker = app.spawn_worker().await;
    app.enqueue("wordcount", serde_json::json!({"text": "x"}))
        .await;
    let response = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("HttpOnly")
    );
    let html = response.text().await.unwrap();
    let manifest = app::assets::Assets::embedded().manifest();
    for logical in ["app.css", "app.js", "logo.svg"] {
        let hashed = manifest["paths"][logical].as_str().unwrap();
        assert!(
            html.contains(&format!("/static/{hashed}")),
            "{logical} not linked by hash"
        );
    }
    assert!(html.contains("PostgreSQL"), "{html}");
    assert!(html.contains("version 1"), "PostgreSQL version missing");
    assert!(html.contains("up to date"), "migration state missing");
    assert!(html.contains("wordcount"), "recent task missing");
    worker.stop().await;
}

#[tokio::test]
async fn the_form_enqueues_with_a_valid_csrf_token_only() {
    let app = spawn_app().await;
    let page = app.client.get(app.url("/")).send().await.unwrap();
    let cookie = cookie_value(&page);
    let token = hidden_token(&page.text().await.unwrap());
    assert_eq!(cookie, token);

    let post = |token: Option<&str>, cookie: Option<&str>| {
        let mut form = vec![("kind", "wordcount"), ("text", "hello form")];
        if let Some(t) = token {
            form.push(("csrf_token", t));
        }
        let mut request = app.client.post(app.url("/tasks")).form(&form);
        if let Some(c) = cookie {
            request = request.header("cookie", format!("csrftoken={c}"));
        }
        request.send()
    };

    let missing = post(None, Some(&cookie)).await.unwrap();
    assert_eq!(missing.status(), 403);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "csrf_failed");
    let forged = "1.abcd.0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(
        post(Some(forged), Some(forged)).await.unwrap().status(),
        403
    );
    assert_eq!(post(Some(&token), None).await.unwrap().status(), 403);
    assert_eq!(app.task_count().await, 0, "a rejected form wrote a task");

    let accepted = post(Some(&token), Some(&cookie)).await.unwrap();
    assert_eq!(accepted.status(), 303);
    assert_eq!(accepted.headers()["location"], "/");
    assert_eq!(app.task_count().await, 1);

    let wrong_type = app
        .client
        .post(app.url("/tasks"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
}

#[tokio::test]
async fn unknown_hosts_are_refused_except_on_probes() {
    let app = spawn_app_with(TestConfig::new().await.set("ALLOWED_HOSTS", "example.com")).await;
    let with_host =
        |path: &str, host: &str| app.client.get(app.url(path)).header("host", host).send();
    let refused = with_host("/api/tasks", "evil.test").await.unwrap();
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "disallowed_host");
    assert_eq!(
        with_host("/api/tasks", "example.com:8000")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        with_host("/healthz", "10.1.2.3:8000")
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_security_headers() {
    let app = spawn_app().await;
    let echoed = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "from-proxy.123")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "from-proxy.123");
    let replaced = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let generated = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    for header in [
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "referrer-policy",
    ] {
        assert!(echoed.headers().contains_key(header), "{header} missing");
    }
}

#[tokio::test]
async fn large_responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn debug_serves_embedded_static_files_and_live_does_not() {
    let assets = app::assets::Assets::embedded();
    let css = assets.find("app.css").unwrap().clone();

    let debug = spawn_app_with(TestConfig::new().await.set("DEBUG", "true")).await;
    let hashed = debug
        .client
        .get(debug.url(&format!("/static/{}", css.hashed)))
        .send()
        .await
        .unwrap();
    assert_eq!(hashed.status(), 200);
    assert!(
        hashed.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert!(
        hashed.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(hashed.bytes().await.unwrap().as_ref(), css.bytes);
    let logical = debug
        .client
        .get(debug.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(logical.headers()["cache-control"], "no-cache");
    let missing = debug
        .client
        .get(debug.url("/static/nope.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let live = spawn_app().await;
    let refused = live
        .client
        .get(live.url(&format!("/static/{}", css.hashed)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        404,
        "without DEBUG, nginx serves static files"
    );
}

#[tokio::test]
async fn debug_with_static_dir_serves_files_from_disk_for_live_editing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.css"), "body { color: red }").unwrap();
    let config = TestConfig::new()
        .await
        .set("DEBUG", "true")
        .set("STATIC_DIR", dir.path().to_str().unwrap());
    let app = spawn_app_with(config).await;
    let html = app
        .client
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("href=\"/static/app.css\""),
        "live editing links logical names"
    );
    let css = app
        .client
        .get(app.url("/static/app.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.text().await.unwrap(), "body { color: red }");
}

#[tokio::test]
async fn metrics_are_served_on_their_own_port_only() {
    let app = spawn_app().await;
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let text = app
        .client
        .get(format!("{}/metrics", app.metrics_address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("http_requests_total")
            && l.contains("route=\"/healthz\"")
            && l.contains("status=\"200\"")),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    let public = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
}
