//! The access log of `app serve`: one line per request, except the probes unless `LOG_PROBES=true`.

use std::collections::HashMap;
use std::time::Duration;

use crate::child::{AppProcess, child_vars};
use crate::helpers::TestConfig;

async fn serve(log_probes: Option<&str>) -> (AppProcess, String, TestConfig) {
    let config = TestConfig::new().await;
    let mut vars: HashMap<String, String> = child_vars(&config.vars);
    vars.insert("RUST_LOG".into(), "info".into());
    vars.insert("LOG_FORMAT".into(), "json".into());
    if let Some(value) = log_probes {
        vars.insert("LOG_PROBES".into(), value.into());
    }
    let base = format!("http://{}", vars["LISTEN_ADDR"]);
    let mut server = AppProcess::spawn(&vars, &["serve"]);
    let client = reqwest::Client::new();
    let readyz = format!("{base}/readyz");
    server
        .eventually("`app serve` is ready", Duration::from_secs(10), || async {
            match client.get(&readyz).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                Ok(response) => Err(response.status().to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await;
    (server, base, config)
}

/// A probe with a known request id, then a plain request with another; returns both ids once the plain request's
/// access line is out. Lines leave through one queue in order, so a probe line would already be there too.
async fn probe_then_route(server: &mut AppProcess, base: &str) -> (String, String) {
    let probe_id = format!("probe-{}", uuid::Uuid::new_v4().simple());
    let route_id = format!("route-{}", uuid::Uuid::new_v4().simple());
    let client = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("{base}{path}"))
            .header("x-request-id", &probe_id)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = client
        .get(format!("{base}/no-such-page"))
        .header("x-request-id", &route_id)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["x-request-id"], route_id.as_str());
    server
        .wait_for_line(
            &[&route_id, "\"status\":404", "/no-such-page"],
            Duration::from_secs(10),
        )
        .await;
    (probe_id, route_id)
}

#[tokio::test]
async fn probes_get_no_access_line_by_default_but_every_other_request_does() {
    let (mut server, base, _config) = serve(None).await;
    let (probe_id, _) = probe_then_route(&mut server, &base).await;
    let output = server.output();
    assert!(
        !output.contains(&probe_id),
        "a probe was logged without LOG_PROBES:\n{output}"
    );
}

#[tokio::test]
async fn log_probes_true_logs_the_probes_too() {
    let (mut server, base, _config) = serve(Some("true")).await;
    let (probe_id, _) = probe_then_route(&mut server, &base).await;
    for path in ["/healthz", "/readyz"] {
        server
            .wait_for_line(&[&probe_id, path, "\"status\":200"], Duration::from_secs(5))
            .await;
    }
}
