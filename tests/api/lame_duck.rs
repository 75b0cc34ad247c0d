//! `SHUTDOWN_DELAY`: after SIGTERM, `app serve` keeps accepting and answering for that long (a proxy still holding
//! its address, or an idle connection to it, gets answers until it has seen the replica go), each answer with
//! `Connection: close`, then stops accepting and exits 0.

use std::time::{Duration, Instant};

use crate::child::{AppProcess, child_vars};
use crate::helpers::{TestConfig, eventually};
use crate::servers::free_port;

#[tokio::test]
async fn serve_keeps_answering_for_the_shutdown_delay_after_sigterm() {
    let config = TestConfig::new()
        .await
        .set("LISTEN_ADDR", format!("127.0.0.1:{}", free_port()))
        .set("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .set("SHUTDOWN_DELAY", "2");
    let vars = child_vars(&config.vars);
    let base = format!("http://{}", vars["LISTEN_ADDR"]);
    let mut server = AppProcess::spawn(&vars, &["serve"]);
    let client = reqwest::Client::new();
    server
        .eventually("`app serve` answers", Duration::from_secs(10), || async {
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .map(|_| ())
        })
        .await;

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    server
        .wait_for_line(&["lame duck"], Duration::from_secs(2))
        .await;
    // A new connection (not a kept-alive one) a second into the delay: still accepted and answered.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let during = fresh.get(format!("{base}/healthz")).send().await;
    let answered_at = signalled.elapsed();
    let during = during.expect("answered during the delay");
    assert_eq!(
        during.status(),
        200,
        "answered during the delay ({answered_at:?} after SIGTERM)"
    );
    // And it closes the connection after the answer, so no kept-alive one is idle when the listener closes.
    assert_eq!(
        during.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..]),
        "{:?}",
        during.headers()
    );
    assert!(answered_at < Duration::from_secs(2), "{answered_at:?}");

    let addr = vars["LISTEN_ADDR"].clone();
    eventually(
        "new connections refused after the delay",
        Duration::from_secs(4),
        || async {
            match tokio::net::TcpStream::connect(&addr).await {
                Ok(_) => Err("still accepting connections"),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    let status = server.exit_within(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.output());
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "exited before SHUTDOWN_DELAY was over: {:?}",
        signalled.elapsed()
    );
}
