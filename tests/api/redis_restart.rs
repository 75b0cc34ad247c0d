//! The first task submitted after a Redis restart: the app's connection broke while it was idle, and the request
//! that finds it broken is still accepted (the XADD is sent again on the reconnected connection), not refused.

use std::time::Duration;

use serde_json::json;

use crate::helpers::eventually;
use crate::outage::app_on_its_own_redis;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_task_after_a_redis_restart_is_accepted() {
    let (mut redis, app) = app_on_its_own_redis().await;
    let before = app.post_task("wordcount", json!({"text": "before"})).await;
    assert_eq!(before.status(), 202, "the app's Redis connection is in use");

    redis.stop();
    redis.resume();
    // Redis answers again (a connection of the test's own), while the app's connection is still the broken one.
    let probe = crate::helpers::queue_of(&app.config).await;
    eventually(
        "Redis answers after the restart",
        Duration::from_secs(5),
        || probe.depth(),
    )
    .await;

    let first = app.post_task("wordcount", json!({"text": "after"})).await;
    let status = first.status();
    assert_eq!(status, 202, "{}", first.text().await.unwrap_or_default());
    assert_eq!(
        app.task_count().await,
        2,
        "both tasks written, nothing else"
    );
    app.stop().await;
}
