//! `API_TOKEN`: with it, every `/api/...` request needs `Authorization: Bearer <token>` (else 401 `unauthorized`
//! and `WWW-Authenticate: Bearer`); the page, its form, the probes stay open. Without it, the API is public.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::child::{KEY_SECRET, PG_SECRET, assert_no_secret, run, vars_of};
use crate::csrf_cookie::{form_token, post_form};
use crate::helpers::{TestApp, TestConfig, spawn_app, spawn_app_with};

const TOKEN: &str = "api-token-hunter2-0123456789";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.request(method.clone(), app.url(path));
    if method == Method::POST {
        request = request.json(&json!({"kind": "sleep", "payload": {"ms": 1}}));
    }
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request.send().await.expect("request sent")
}

#[tokio::test]
async fn with_a_token_the_api_requires_it_and_the_page_and_probes_do_not() {
    let app = spawn_app_with(TestConfig::new().await.set("API_TOKEN", TOKEN)).await;
    let some_id = uuid::Uuid::new_v4();
    let routes = [
        (Method::POST, "/api/tasks".to_string()),
        (Method::GET, "/api/tasks".to_string()),
        (Method::GET, format!("/api/tasks/{some_id}")),
        (Method::GET, "/api/nowhere".to_string()),
    ];
    let wrong = [
        None,
        Some("Bearer api-token-hunter2-012345678"),
        Some("Bearer api-token-hunter2-0123456789x"),
        Some("Basic api-token-hunter2-0123456789"),
        Some(TOKEN),
    ];
    for (method, path) in &routes {
        for authorization in wrong {
            let response = send(&app, method.clone(), path, authorization).await;
            assert_eq!(
                response.status(),
                401,
                "{method} {path} with {authorization:?}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(!body.to_string().contains("hunter2"), "{body}");
        }
    }
    assert_eq!(app.task_count().await, 0, "a refused request wrote a task");

    let right = format!("Bearer {TOKEN}");
    let created = send(&app, Method::POST, "/api/tasks", Some(&right)).await;
    assert_eq!(created.status(), 202);
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for path in [format!("/api/tasks/{id}"), "/api/tasks".to_string()] {
        assert_eq!(
            send(&app, Method::GET, &path, Some(&right)).await.status(),
            200,
            "{path}"
        );
    }
    let lower_case_scheme = format!("bearer {TOKEN}");
    assert_eq!(
        send(&app, Method::GET, "/api/tasks", Some(&lower_case_scheme))
            .await
            .status(),
        200
    );
    assert_eq!(
        send(&app, Method::GET, "/api/nowhere", Some(&right))
            .await
            .status(),
        404
    );

    for path in ["/", "/healthz", "/readyz"] {
        assert_eq!(app.get(path).await.status(), 200, "{path}");
    }
    let (_, token) = form_token(&app, false).await;
    let form = post_form(&app, false, &format!("csrftoken={token}"), &token).await;
    assert_eq!(form.status(), 303, "the form needs no API token");
    assert_eq!(app.task_count().await, 2);
}

#[tokio::test]
async fn without_a_token_the_api_is_public() {
    let app = spawn_app().await;
    for authorization in [None, Some("Bearer anything-at-all-really")] {
        let created = send(&app, Method::POST, "/api/tasks", authorization).await;
        assert_eq!(created.status(), 202);
        assert_eq!(
            send(&app, Method::GET, "/api/tasks", authorization)
                .await
                .status(),
            200
        );
    }
}

/// The token from a Docker secret file, shown redacted by `app check`; a short one, or both forms, refused.
#[tokio::test]
async fn the_token_is_a_secret_of_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api_token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let file = file.to_str().unwrap();
    let base = [("POSTGRES_PASSWORD", PG_SECRET), ("SECRET_KEY", KEY_SECRET)];

    let vars = vars_of(&[base[0], base[1], ("API_TOKEN_FILE", file)]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    assert_eq!(finished.status.code(), Some(0), "{}", finished.all());
    assert!(
        finished
            .stdout
            .lines()
            .any(|l| l.contains("api_token") && l.contains("[REDACTED]")),
        "{}",
        finished.stdout
    );
    assert_no_secret(&finished, &[TOKEN, PG_SECRET, KEY_SECRET]);

    let vars = vars_of(&[base[0], base[1]]);
    let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
    finished.assert_stdout_has(&["(unset: the API is public)", "queue_max_backlog    10000"]);

    let short = "short-hunter2";
    for (vars, problems) in [
        (
            vars_of(&[
                base[0],
                base[1],
                ("API_TOKEN", short),
                ("QUEUE_MAX_BACKLOG", "lots"),
            ]),
            &[
                "API_TOKEN: must be at least 16 characters",
                "QUEUE_MAX_BACKLOG: cannot parse `lots`",
            ][..],
        ),
        (
            vars_of(&[
                base[0],
                base[1],
                ("API_TOKEN", TOKEN),
                ("API_TOKEN_FILE", file),
            ]),
            &["API_TOKEN and API_TOKEN_FILE are both set"][..],
        ),
    ] {
        let finished = run(&vars, &["check"], Duration::from_secs(10)).await;
        assert_eq!(finished.status.code(), Some(2), "{}", finished.all());
        finished.assert_stderr_has(problems);
        assert_no_secret(&finished, &[TOKEN, short]);
    }
}
