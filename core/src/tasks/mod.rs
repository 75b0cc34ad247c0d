//! The Celery part: task kinds, their records in PostgreSQL, the Redis queue, the transitions between states, the
//! worker and its periodic jobs. The contract is in this folder's README.

pub mod backlog;
pub mod batches;
pub mod idempotency;
pub mod kinds;
pub mod lifecycle;
pub mod queue;
pub mod records;
pub mod store;
mod timestamps;
pub mod worker;

pub use backlog::{Backlog, QueueFull};
pub use batches::EnqueueBatches;
pub use idempotency::{Idempotency, InvalidIdempotencyKey};
pub use kinds::{InvalidTask, TaskSpec};
pub use lifecycle::{EnqueueError, EnqueuedBatch, Lifecycle, Queued};
pub use queue::Queue;
pub use records::{TaskRecord, TaskState};
pub use store::TaskStore;
