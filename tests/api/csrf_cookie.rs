//! The CSRF cookie over HTTPS (TLS ends at the edge nginx, which says so in `X-Forwarded-Proto`): `Secure` and named
//! `__Host-csrftoken`; over plain HTTP (development) the old `csrftoken`, without `Secure`. The form believes only
//! the cookie of the request's own scheme.

use crate::helpers::{TestApp, spawn_app};

/// The `Set-Cookie` of `GET /` and the form's hidden token, over HTTPS (per the proxy's header) or not.
pub async fn form_token(app: &TestApp, https: bool) -> (String, String) {
    let mut request = app.client.get(app.url("/"));
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    let page = request.send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let set_cookie = page.headers()["set-cookie"].to_str().unwrap().to_string();
    let html = page.text().await.unwrap();
    let marker = "name=\"csrf_token\" value=\"";
    let start = html.find(marker).expect("the form's token") + marker.len();
    let token = html[start..].split('"').next().unwrap().to_string();
    (set_cookie, token)
}

/// `POST /tasks` with `cookie` as the Cookie header and `token` in the form.
pub async fn post_form(app: &TestApp, https: bool, cookie: &str, token: &str) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/tasks"))
        .header("cookie", cookie)
        .form(&[("csrf_token", token), ("kind", "sleep"), ("ms", "1")]);
    if https {
        request = request.header("x-forwarded-proto", "https");
    }
    request.send().await.expect("POST /tasks")
}

#[tokio::test]
async fn over_https_the_cookie_is_secure_and_host_prefixed_and_only_it_is_believed() {
    let app = spawn_app().await;
    let (set_cookie, token) = form_token(&app, true).await;
    assert_eq!(
        set_cookie,
        format!("__Host-csrftoken={token}; Path=/; HttpOnly; SameSite=Strict; Secure")
    );

    let plain_name = post_form(&app, true, &format!("csrftoken={token}"), &token).await;
    assert_eq!(
        plain_name.status(),
        403,
        "a plain cookie believed over HTTPS"
    );
    assert_eq!(app.task_count().await, 0);

    let secure = post_form(&app, true, &format!("__Host-csrftoken={token}"), &token).await;
    assert_eq!(secure.status(), 303);
    assert_eq!(app.task_count().await, 1);
}

#[tokio::test]
async fn over_plain_http_the_cookie_keeps_its_name_without_secure() {
    let app = spawn_app().await;
    for proto in [None, Some("http")] {
        let mut request = app.client.get(app.url("/"));
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        let set_cookie = request.send().await.unwrap().headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(set_cookie.starts_with("csrftoken="), "{set_cookie}");
        assert!(
            set_cookie.ends_with("; Path=/; HttpOnly; SameSite=Strict"),
            "{set_cookie}"
        );
    }
    let (_, token) = form_token(&app, false).await;

    let host_name = post_form(&app, false, &format!("__Host-csrftoken={token}"), &token).await;
    assert_eq!(
        host_name.status(),
        403,
        "the HTTPS cookie believed over HTTP"
    );
    let plain = post_form(&app, false, &format!("csrftoken={token}"), &token).await;
    assert_eq!(plain.status(), 303);
    assert_eq!(app.task_count().await, 1);
}
