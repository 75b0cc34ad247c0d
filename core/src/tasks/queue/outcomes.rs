//! Where an entry goes when its attempt ends: retired (XACK + XDEL) when done, into the retry set, onto the dead
//! list, or back onto the stream when a shutdown interrupted it; and the retry set moved back onto the stream when
//! due.

use redis::streams::StreamRangeReply;
use redis::{AsyncCommands, Pipeline, RedisResult, Script};
use uuid::Uuid;

use super::{GROUP, Queue, now_ms};

/// The dead list keeps the newest this many tasks.
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

impl Queue {
    /// Adds to `pipe` what retires an entry: XACK takes it off the pending list, XDEL off the stream (so the
    /// stream's length stays the queue depth).
    fn retire<'p>(&self, pipe: &'p mut Pipeline, entry_id: &str) -> &'p mut Pipeline {
        pipe.xack(&self.keys.stream, GROUP, &[entry_id])
            .ignore()
            .xdel(&self.keys.stream, &[entry_id])
            .ignore()
    }

    /// Acknowledges and deletes a finished entry.
    pub async fn ack(&self, entry_id: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        self.retire(redis::pipe().atomic(), entry_id)
            .query_async(&mut conn)
            .await
    }

    /// Acknowledges and deletes many finished entries in one round trip.
    pub async fn ack_many(&self, entry_ids: &[&str]) -> RedisResult<()> {
        if entry_ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .xack(&self.keys.stream, GROUP, entry_ids)
            .ignore()
            .xdel(&self.keys.stream, entry_ids)
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
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd(&self.keys.retry, task_id.to_string(), due_ms)
            .ignore();
        self.retire(&mut pipe, entry_id)
            .query_async(&mut conn)
            .await
    }

    /// Records a dead task (the list keeps the newest ones) and retires its entry, atomically.
    pub async fn bury(&self, task_id: Uuid, entry_id: &str) -> RedisResult<()> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .lpush(&self.keys.dead, task_id.to_string())
            .ignore()
            .ltrim(&self.keys.dead, 0, DEAD_LIST_LENGTH - 1)
            .ignore();
        self.retire(&mut pipe, entry_id)
            .query_async(&mut conn)
            .await
    }

    /// Puts a task back at the end of the stream and retires the entry this worker held, atomically; used when a
    /// shutdown interrupts a task, so another worker starts it at once instead of after `claim_idle`.
    pub async fn hand_back(&self, task_id: Uuid, entry_id: &str) -> RedisResult<String> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .xadd(&self.keys.stream, "*", &[("task", task_id.to_string())]);
        let (new_id,): (String,) = self
            .retire(&mut pipe, entry_id)
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
            let entries: StreamRangeReply =
                conn.xrange(&self.keys.stream, entry_id, entry_id).await?;
            if !entries.ids.is_empty() {
                return Ok(true);
            }
        }
        let score: Option<f64> = conn.zscore(&self.keys.retry, task_id.to_string()).await?;
        Ok(score.is_some())
    }
}
