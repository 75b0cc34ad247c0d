//! The work queue: a Redis stream read by a consumer group, a sorted set of retries and a dead list.
//!
//! Each stream entry carries one task id; the task itself lives in PostgreSQL. Delivery is at least once:
//! an entry stays pending until a worker acknowledges it, and a pending entry whose worker stopped refreshing
//! its claim for `claim_idle` is taken over by another worker (XAUTOCLAIM). Finished entries are deleted, so the
//! stream length is the queue depth. Every key starts with `QUEUE_NAME`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamInfoConsumersReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, RedisResult, Script};
use uuid::Uuid;

const GROUP: &str = "workers";
const DEAD_LIST_LENGTH: isize = 1000;

/// Moves due retries back onto the stream in one atomic step, so a retry is never dropped between the two.
const PROMOTE_DUE_RETRIES: &str = r"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'task', id)
end
return #due
";

/// One delivery of a task to this worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub entry_id: String,
    pub task_id: Uuid,
}

#[derive(Clone)]
struct Keys {
    stream: String,
    retry: String,
    dead: String,
    heartbeats: String,
    beat: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            stream: format!("{prefix}:stream"),
            retry: format!("{prefix}:retry"),
            dead: format!("{prefix}:dead"),
            heartbeats: format!("{prefix}:heartbeats"),
            beat: format!("{prefix}:beat"),
        }
    }
}

/// The shared, reconnecting handle used by the web server and the worker alike.
#[derive(Clone)]
pub struct Queue {
    client: Client,
    conn: ConnectionManager,
    keys: Keys,
}

/// Milliseconds since the Unix epoch (Redis scores and heartbeats).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn is_busygroup(err: &RedisError) -> bool {
    err.code() == Some("BUSYGROUP")
}

pub fn is_nogroup(err: &RedisError) -> bool {
    err.code() == Some("NOGROUP")
}

impl Queue {
    /// Connects; fails when Redis cannot be reached now (callers wait for Redis first). Later outages are
    /// survived: the connection manager reconnects by itself and commands fail fast meanwhile.
    pub async fn connect(url: &str, prefix: &str) -> RedisResult<Self> {
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(Self {
            client,
            conn,
            keys: Keys::new(prefix),
        })
    }

    /// A dedicated connection for the blocking XREADGROUP: it must not share the multiplexed connection (it would
    /// stall every other command) and needs a response timeout longer than the block time.
    pub async fn blocking_connection(&self, block: Duration) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(block + Duration::from_secs(2)));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    pub async fn ping(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Creates the stream and its consumer group if missing. The group starts at `0` so entries added before any
    /// worker existed are delivered too.
    pub async fn ensure_group(&self) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(err) if !is_busygroup(&err) => Err(err),
            _ => Ok(()),
        }
    }

    /// Appends a task to the stream; returns the entry id.
    pub async fn enqueue(&self, task_id: Uuid) -> RedisResult<String> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD")
            .arg(&self.keys.stream)
            .arg("*")
            .arg("task")
            .arg(task_id.to_string())
            .query_async(&mut conn)
            .await
    }

    /// Last worker heartbeat and queue depth (see [`Queue::depth`]) in one round trip (the status page).
    pub async fn status(&self) -> RedisResult<(Option<i64>, u64)> {
        let mut conn = self.conn.clone();
        let (beats, stream, retry): (Vec<i64>, u64, u64) = redis::pipe()
            .cmd("HVALS")
            .arg(&self.keys.heartbeats)
            .cmd("XLEN")
            .arg(&self.keys.stream)
            .cmd("ZCARD")
            .arg(&self.keys.retry)
            .query_async(&mut conn)
            .await?;
        Ok((beats.into_iter().max(), stream + retry))
    }

    /// Tasks waiting or running (stream entries are deleted when finished) plus scheduled retries.
    pub async fn depth(&self) -> RedisResult<u64> {
        Ok(self.status().await?.1)
    }

    /// New entries for `consumer`, waiting up to `block` for one to arrive.
    pub async fn read_new(
        &self,
        blocking: &mut MultiplexedConnection,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> RedisResult<Vec<Delivery>> {
        let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(">")
            .query_async(blocking)
            .await?;
        let entries = reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|e| (e.get::<String>("task"), e.id));
        Ok(self.deliveries(entries).await)
    }

    /// Takes over up to `count` entries that other consumers left idle for at least `min_idle`. Returns the
    /// deliveries and the cursor to continue from (`0-0` once the scan wrapped around).
    pub async fn claim_abandoned(
        &self,
        consumer: &str,
        min_idle: Duration,
        cursor: &str,
        count: usize,
    ) -> RedisResult<(Vec<Delivery>, String)> {
        let mut conn = self.conn.clone();
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        let entries = reply
            .claimed
            .into_iter()
            .map(|e| (e.get::<String>("task"), e.id));
        Ok((self.deliveries(entries).await, reply.next_stream_id))
    }

    /// Turns raw entries into deliveries; an entry without a valid task id can never be run, so it is dropped.
    async fn deliveries(
        &self,
        entries: impl Iterator<Item = (Option<String>, String)>,
    ) -> Vec<Delivery> {
        let mut out = Vec::new();
        for (task, entry_id) in entries {
            match task.as_deref().map(Uuid::parse_str) {
                Some(Ok(task_id)) => out.push(Delivery { entry_id, task_id }),
                _ => {
                    tracing::warn!(%entry_id, "dropping a stream entry without a valid task id");
                    let _ = self.ack(&entry_id).await;
                }
            }
        }
        out
    }

    /// Resets the idle time of entries this consumer still works on, so nobody takes them over.
    pub async fn refresh_claims(&self, consumer: &str, entry_ids: &[String]) -> RedisResult<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: Vec<String> = redis::cmd("XCLAIM")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry_ids)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Acknowledges and deletes a finished entry.
    pub async fn ack(&self, entry_id: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(entry_id)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Schedules a retry at `due_ms` and retires the current entry, atomically.
    pub async fn schedule_retry(
        &self,
        task_id: Uuid,
        entry_id: &str,
        due_ms: i64,
    ) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("ZADD")
            .arg(&self.keys.retry)
            .arg(due_ms)
            .arg(task_id.to_string())
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(entry_id)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Records a dead task (the list keeps the newest ones) and retires its entry, atomically.
    pub async fn bury(&self, task_id: Uuid, entry_id: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .cmd("LPUSH")
            .arg(&self.keys.dead)
            .arg(task_id.to_string())
            .ignore()
            .cmd("LTRIM")
            .arg(&self.keys.dead)
            .arg(0)
            .arg(DEAD_LIST_LENGTH - 1)
            .ignore()
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(entry_id)
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Puts a task back at the end of the stream and retires the entry this worker held, atomically; used when a
    /// shutdown interrupts a task, so another worker starts it at once instead of after `claim_idle`.
    pub async fn hand_back(&self, task_id: Uuid, entry_id: &str) -> RedisResult<String> {
        let mut conn = self.conn.clone();
        let (new_id,): (String,) = redis::pipe()
            .atomic()
            .cmd("XADD")
            .arg(&self.keys.stream)
            .arg("*")
            .arg("task")
            .arg(task_id.to_string())
            .cmd("XACK")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg(entry_id)
            .ignore()
            .cmd("XDEL")
            .arg(&self.keys.stream)
            .arg(entry_id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(new_id)
    }

    /// Moves retries that are due back onto the stream; returns how many.
    pub async fn promote_due_retries(&self, limit: usize) -> RedisResult<usize> {
        let mut conn = self.conn.clone();
        Script::new(PROMOTE_DUE_RETRIES)
            .key(&self.keys.retry)
            .key(&self.keys.stream)
            .arg(now_ms())
            .arg(limit)
            .invoke_async(&mut conn)
            .await
    }

    /// Whether Redis still carries a task: as the given stream entry, or as a scheduled retry.
    pub async fn carries(&self, task_id: Uuid, entry_id: Option<&str>) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        if let Some(entry_id) = entry_id {
            let entries: Vec<redis::Value> = redis::cmd("XRANGE")
                .arg(&self.keys.stream)
                .arg(entry_id)
                .arg(entry_id)
                .query_async(&mut conn)
                .await?;
            if !entries.is_empty() {
                return Ok(true);
            }
        }
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&self.keys.retry)
            .arg(task_id.to_string())
            .query_async(&mut conn)
            .await?;
        Ok(score.is_some())
    }

    /// Records that `consumer` is alive.
    pub async fn heartbeat(&self, consumer: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        redis::cmd("HSET")
            .arg(&self.keys.heartbeats)
            .arg(consumer)
            .arg(now_ms())
            .query_async(&mut conn)
            .await
    }

    /// The most recent heartbeat of any worker, in ms since the epoch.
    pub async fn last_heartbeat(&self) -> RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let beats: Vec<i64> = redis::cmd("HVALS")
            .arg(&self.keys.heartbeats)
            .query_async(&mut conn)
            .await?;
        Ok(beats.into_iter().max())
    }

    /// Takes the lock of one periodic job for one period: exactly one worker gets `true` per period.
    pub async fn try_lock_period(
        &self,
        job: &str,
        consumer: &str,
        period: Duration,
    ) -> RedisResult<bool> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}:{job}", self.keys.beat))
            .arg(consumer)
            .arg("NX")
            .arg("PX")
            .arg(period.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    /// Removes consumers that left the group (nothing pending, idle longer than `idle`) and their heartbeats.
    pub async fn remove_departed_consumers(&self, idle: Duration) -> RedisResult<usize> {
        let mut conn = self.conn.clone();
        let info: StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .query_async(&mut conn)
            .await?;
        let mut removed = 0;
        for consumer in info.consumers {
            if consumer.pending == 0 && consumer.idle as u128 > idle.as_millis() {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(&self.keys.stream)
                    .arg(GROUP)
                    .arg(&consumer.name)
                    .query_async(&mut conn)
                    .await?;
                let _: i64 = redis::cmd("HDEL")
                    .arg(&self.keys.heartbeats)
                    .arg(&consumer.name)
                    .query_async(&mut conn)
                    .await?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Ids of the most recent dead tasks, newest first.
    pub async fn dead(&self, limit: isize) -> RedisResult<Vec<String>> {
        let mut conn = self.conn.clone();
        redis::cmd("LRANGE")
            .arg(&self.keys.dead)
            .arg(0)
            .arg(limit - 1)
            .query_async(&mut conn)
            .await
    }
}
