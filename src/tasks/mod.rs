//! The Celery part: task kinds, their records in PostgreSQL, the Redis queue, the transitions between states, the
//! worker and its periodic jobs. The contract is in this folder's README.

pub mod backlog;
mod enqueue_batch;
pub mod kinds;
pub mod lifecycle;
pub mod queue;
pub mod records;
pub mod store;
mod stream_ids;
pub mod worker;

pub use backlog::{Backlog, QueueFull};
pub use enqueue_batch::EnqueueBatches;
pub use kinds::{InvalidTask, TaskSpec};
pub use lifecycle::{EnqueueError, Lifecycle};
pub use queue::Queue;
pub use records::{TaskRecord, TaskState};
pub use store::TaskStore;
