//! What a task looks like in and out of its PostgreSQL row: its state, the API's full record, the status page's
//! summary, and what the worker and the reconciler read.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::idempotency::Idempotency;
use super::kinds::TaskSpec;
use super::timestamps::{rfc3339, rfc3339_or_null};

/// A task about to be written: its id is chosen before the row exists, so the stream entry can name it.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub id: Uuid,
    pub spec: TaskSpec,
    pub max_attempts: i32,
    pub request_id: Option<String>,
    /// Its `Idempotency-Key`, if the request had one.
    pub idempotency: Option<Idempotency>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Retrying,
    Done,
    Dead,
}

impl TaskState {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Dead)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// A task as the API shows it. `payload` and `result` are PostgreSQL's `jsonb` text as it is (checked, not decoded
/// into a tree and encoded again): what PostgreSQL stores is JSON already.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: Uuid,
    pub kind: String,
    pub payload: Box<RawValue>,
    pub state: TaskState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Box<RawValue>>,
    pub error: Option<String>,
    pub request_id: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub run_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "rfc3339_or_null")]
    pub finished_at: Option<DateTime<Utc>>,
}

/// The columns the status page shows (no jsonb payload or result to transfer and decode).
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub id: Uuid,
    pub kind: String,
    pub state: TaskState,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub error: Option<String>,
}

/// A task a worker has just started (its lease is held).
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub request_id: Option<String>,
}

/// What [`TaskStore::start_many`](super::store::TaskStore::start_many) found for one delivery.
#[derive(Debug)]
pub enum StartOutcome {
    Started(StartedTask),
    /// Finished, unknown or not yet due: the delivery can be acknowledged and dropped.
    Drop(&'static str),
    /// Another worker holds a live lease: leave the delivery pending, never run it concurrently.
    HeldElsewhere,
}

/// The task that holds an idempotency key, and the hash of the request that queued it.
#[derive(Debug)]
pub struct KeyedTask {
    pub key: String,
    pub request_hash: Vec<u8>,
    pub record: TaskRecord,
}

/// An unfinished task the reconciler should check against Redis.
#[derive(Debug)]
pub struct StaleTask {
    pub id: Uuid,
    pub state: TaskState,
    pub entry_id: Option<String>,
}
