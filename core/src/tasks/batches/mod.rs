//! The task writes made in batches (group commit): one background writer each, all of one shape. A handle holds
//! the sending end of a channel; `spawn` starts its writer on the current runtime; the writer takes everything
//! queued while its previous batch was being written, up to [`MAX_BATCH`], and never waits for a batch to fill (at
//! low load a batch is one item and adds no latency).
//!
//! | writer | owned by | one batch |
//! |---|---|---|
//! | [`EnqueueBatches`] | the web app's state | new tasks: one `INSERT` and one commit, then one `MULTI` of XADDs |
//! | [`EntryIdBatches`] | [`EnqueueBatches`] | which stream entry carries each new task: one `UPDATE`, a second later |
//! | [`DoneBatches`] | the worker | successful attempts: one `UPDATE`, then one XACK + XDEL |

mod done;
mod enqueue;
mod entry_ids;

pub use done::DoneBatches;
pub use enqueue::EnqueueBatches;
pub use entry_ids::EntryIdBatches;

/// Most items in one batch, for every writer.
pub const MAX_BATCH: usize = 256;
