//! What the workers know of each other, kept in Redis beside the stream: heartbeats, the locks that let one
//! worker run each periodic job per period, and the consumers that left the group.

use std::time::Duration;

use redis::streams::StreamInfoConsumersReply;
use redis::{AsyncCommands, ExistenceCheck, RedisResult, SetExpiry, SetOptions};

use super::{GROUP, Queue, now_ms};

impl Queue {
    /// Records that `consumer` is alive (every [`super::HEARTBEAT_EVERY`]).
    pub async fn heartbeat(&self, consumer: &str) -> RedisResult<()> {
        self.conn
            .clone()
            .hset(&self.keys.heartbeats, consumer, now_ms())
            .await
    }

    /// Takes the lock of one periodic job for one period: exactly one worker gets `true` per period.
    pub async fn try_lock_period(
        &self,
        job: &str,
        consumer: &str,
        period: Duration,
    ) -> RedisResult<bool> {
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(period.as_millis() as u64));
        let set: Option<String> = self
            .conn
            .clone()
            .set_options(format!("{}:{job}", self.keys.beat), consumer, options)
            .await?;
        Ok(set.is_some())
    }

    /// Removes consumers that left the group (nothing pending, idle longer than `idle`) and their heartbeats.
    pub async fn remove_departed_consumers(&self, idle: Duration) -> RedisResult<usize> {
        let mut conn = self.conn.clone();
        let info: StreamInfoConsumersReply = conn.xinfo_consumers(&self.keys.stream, GROUP).await?;
        let mut removed = 0;
        for consumer in info.consumers {
            if consumer.pending == 0 && consumer.idle as u128 > idle.as_millis() {
                let _: i64 = conn
                    .xgroup_delconsumer(&self.keys.stream, GROUP, &consumer.name)
                    .await?;
                let _: i64 = conn.hdel(&self.keys.heartbeats, &consumer.name).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
