//! The work queue: a Redis stream read by a consumer group, a sorted set of retries and a dead list.
//!
//! Each stream entry carries one task id; the task itself lives in PostgreSQL. Delivery is at least once:
//! an entry stays pending until a worker acknowledges it, and a pending entry whose worker stopped refreshing
//! its claim for `claim_idle` is taken over by another worker (XAUTOCLAIM). Finished entries are deleted, so the
//! stream length is the queue depth. Every key starts with `QUEUE_NAME`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamClaimOptions, StreamReadOptions,
    StreamReadReply,
};
use redis::{AsyncCommands, AsyncConnectionConfig, Client, RedisError, RedisResult};
use uuid::Uuid;

mod outcomes;
mod workers;

const GROUP: &str = "workers";
/// How often each worker writes its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
/// A worker whose last heartbeat is older than this (15 missed beats) is shown as gone.
pub const HEARTBEAT_STALE_AFTER: Duration = Duration::from_secs(15 * HEARTBEAT_EVERY.as_secs());

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
        let _: String = self.conn.clone().ping().await?;
        Ok(())
    }

    /// Creates the stream and its consumer group if missing. The group starts at `0` so entries added before any
    /// worker existed are delivered too.
    pub async fn ensure_group(&self) -> RedisResult<()> {
        let created: RedisResult<()> = self
            .conn
            .clone()
            .xgroup_create_mkstream(&self.keys.stream, GROUP, "0")
            .await;
        match created {
            Err(err) if !is_busygroup(&err) => Err(err),
            _ => Ok(()),
        }
    }

    /// Appends a task to the stream; returns the entry id.
    ///
    /// Tried twice when the connection is found broken: after a Redis restart, the first command on a connection
    /// that was idle meanwhile fails while the manager reconnects. Should the first XADD have arrived after all,
    /// the task has two entries, and the second delivery is a no-op (the start in PostgreSQL admits one worker).
    pub async fn enqueue(&self, task_id: Uuid) -> RedisResult<String> {
        let fields = [("task", task_id.to_string())];
        let first = self
            .conn
            .clone()
            .xadd(&self.keys.stream, "*", &fields)
            .await;
        match first {
            Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                tracing::debug!(error = %err, "redis connection broken; XADD sent again");
                self.conn
                    .clone()
                    .xadd(&self.keys.stream, "*", &fields)
                    .await
            }
            other => other,
        }
    }

    /// Appends many tasks to the stream in one round trip (`MULTI` … `EXEC`: all of them or none); returns their
    /// entry ids in the order given. Sent twice when the connection is found broken, as [`Queue::enqueue`].
    pub async fn enqueue_many(&self, task_ids: &[Uuid]) -> RedisResult<Vec<String>> {
        if task_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in task_ids {
            pipe.xadd(&self.keys.stream, "*", &[("task", id.to_string())]);
        }
        let first = pipe.query_async(&mut self.conn.clone()).await;
        match first {
            Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                tracing::debug!(error = %err, "redis connection broken; XADDs sent again");
                pipe.query_async(&mut self.conn.clone()).await
            }
            other => other,
        }
    }

    /// Last worker heartbeat and queue depth (see [`Queue::depth`]) in one round trip (the status page).
    pub async fn status(&self) -> RedisResult<(Option<i64>, u64)> {
        let mut conn = self.conn.clone();
        let (beats, stream, retry): (Vec<i64>, u64, u64) = redis::pipe()
            .hvals(&self.keys.heartbeats)
            .xlen(&self.keys.stream)
            .zcard(&self.keys.retry)
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
        let options = StreamReadOptions::default()
            .group(GROUP, consumer)
            .count(count)
            .block(block.as_millis() as usize);
        let reply: Option<StreamReadReply> = blocking
            .xread_options(&[&self.keys.stream], &[">"], &options)
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
        let options = StreamAutoClaimOptions::default().count(count);
        let reply: StreamAutoClaimReply = self
            .conn
            .clone()
            .xautoclaim_options(
                &self.keys.stream,
                GROUP,
                consumer,
                min_idle.as_millis() as u64,
                cursor,
                options,
            )
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
        let options = StreamClaimOptions::default().with_justid();
        let _: Vec<String> = self
            .conn
            .clone()
            .xclaim_options(&self.keys.stream, GROUP, consumer, 0, entry_ids, options)
            .await?;
        Ok(())
    }
}
