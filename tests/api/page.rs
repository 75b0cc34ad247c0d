use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::{TestConfig, eventually, spawn_app, spawn_app_with};

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
    let response = app.get("/").await;
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

/// The page's view of the stores is shared for up to a second (`page_snapshot.rs`), but a task queued through the
/// app is on its next page at once, and one written elsewhere (another replica) within the second.
#[tokio::test]
async fn the_page_shows_a_task_queued_here_at_once_and_one_queued_elsewhere_within_a_second() {
    let app = spawn_app().await;
    let page = || async { app.get("/").await.text().await.unwrap() };
    page().await;
    let here = app.enqueue("sleep", serde_json::json!({"ms": 1})).await;
    let seen = Instant::now();
    assert!(
        page().await.contains(&here.to_string()),
        "not on the next page"
    );

    let elsewhere = uuid::Uuid::new_v4();
    sqlx::query(
        r#"INSERT INTO tasks (id, kind, payload, max_attempts) VALUES ($1, 'sleep', '{"ms": 1}', 5)"#,
    )
    .bind(elsewhere)
    .execute(&app.pool)
    .await
    .unwrap();
    let shared = page().await;
    if seen.elapsed() < Duration::from_millis(500) {
        assert!(
            !shared.contains(&elsewhere.to_string()),
            "the page asked PostgreSQL again within a second"
        );
    }
    let (_, took) = eventually(
        "the task queued elsewhere on the page",
        Duration::from_secs(5),
        || async {
            match page().await.contains(&elsewhere.to_string()) {
                true => Ok(()),
                false => Err("not yet"),
            }
        },
    )
    .await;
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[tokio::test]
async fn the_form_enqueues_with_a_valid_csrf_token_only() {
    let app = spawn_app().await;
    let page = app.get("/").await;
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
        .get_with("/healthz", "x-request-id", "from-proxy.123")
        .await;
    assert_eq!(echoed.headers()["x-request-id"], "from-proxy.123");
    let replaced = app
        .get_with("/healthz", "x-request-id", "bad id with spaces")
        .await;
    let generated = replaced.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    for header in [
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "referrer-policy",
        "permissions-policy",
    ] {
        assert!(echoed.headers().contains_key(header), "{header} missing");
    }
}

/// The app owns the security headers of every answer it makes: pages, API errors, refused Hosts and metrics.
#[tokio::test]
async fn security_headers_have_the_decided_values_on_every_kind_of_answer() {
    let app = spawn_app_with(TestConfig::new().await.set("ALLOWED_HOSTS", "example.com")).await;
    let expected = [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        (
            "permissions-policy",
            "camera=(), microphone=(), geolocation=()",
        ),
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
             frame-ancestors 'none'; form-action 'self'",
        ),
    ];
    let page = app.client.get(app.url("/")).header("host", "example.com");
    let not_found = app
        .client
        .get(app.url("/nowhere"))
        .header("host", "example.com");
    let refused_host = app.client.get(app.url("/")).header("host", "evil.test");
    let metrics = app.client.get(format!("{}/metrics", app.metrics_address));
    for (what, request) in [
        ("the page", page),
        ("a 404", not_found),
        ("a refused Host", refused_host),
        ("metrics", metrics),
    ] {
        let response = request.send().await.unwrap();
        for (name, value) in expected {
            assert_eq!(
                response.headers().get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name} on {what} ({})",
                response.status()
            );
        }
    }
}

#[tokio::test]
async fn large_responses_are_compressed_when_asked() {
    let app = spawn_app().await;
    let response = app.get_with("/", "accept-encoding", "gzip").await;
    assert_eq!(response.headers()["content-encoding"], "gzip");
}

#[tokio::test]
async fn debug_serves_embedded_static_files_and_live_does_not() {
    let assets = app::assets::Assets::embedded();
    let css = assets.find("app.css").unwrap().clone();

    let debug = spawn_app_with(TestConfig::new().await.set("DEBUG", "true")).await;
    let hashed = debug.get(&format!("/static/{}", css.hashed)).await;
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
    let logical = debug.get("/static/app.css").await;
    assert_eq!(logical.headers()["cache-control"], "no-cache");
    let missing = debug.get("/static/nope.css").await;
    assert_eq!(missing.status(), 404);

    let live = spawn_app().await;
    let refused = live.get(&format!("/static/{}", css.hashed)).await;
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
    let html = app.get("/").await.text().await.unwrap();
    assert!(
        html.contains("href=\"/static/app.css\""),
        "live editing links logical names"
    );
    let css = app.get("/static/app.css").await;
    assert_eq!(css.text().await.unwrap(), "body { color: red }");
}

/// The value of the series of `metric` whose labels include every one of `labels` (0 when there is none yet).
fn series(text: &str, metric: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// The recorder is process-wide, and other tests' requests land in it too: this test counts a method and status
/// only it sends (`PATCH /api/tasks`, 405), before and after, so only its own requests can move the figures.
/// Probes are not counted (they sit outside the pages' middleware), so no `/healthz` series ever exists.
#[tokio::test]
async fn metrics_are_served_on_their_own_port_only() {
    let app = spawn_app().await;
    let scrape = || async {
        app.client
            .get(format!("{}/metrics", app.metrics_address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let labels = ["method=\"PATCH\"", "route=\"/api/tasks\"", "status=\"405\""];
    let before = scrape().await;
    const REQUESTS: u64 = 3;
    for _ in 0..REQUESTS {
        let response = app
            .client
            .patch(app.url("/api/tasks"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    let after = scrape().await;
    assert_eq!(
        series(&after, "http_requests_total", &["route=\"/healthz\""]),
        0,
        "a probe was counted:\n{after}"
    );
    for metric in ["http_requests_total", "http_request_duration_seconds_count"] {
        assert_eq!(
            series(&after, metric, &labels) - series(&before, metric, &labels),
            REQUESTS,
            "{metric} of PATCH /api/tasks:\n{after}"
        );
    }
    assert!(
        after.contains("http_request_duration_seconds_bucket"),
        "{after}"
    );
    let public = app.get("/metrics").await;
    assert_eq!(public.status(), 404);
}
