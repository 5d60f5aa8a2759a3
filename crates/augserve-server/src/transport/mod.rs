//! How a stream's tensors travel to its client: one file per transport, each behind
//! [`Transport`], chosen once per stream by [`choose`]. A transport gives each batch its
//! [`Destination`] (the backend writes there directly) and says where the tensor went.
//!
//! Adding a transport: a file here implementing `Transport`, its arm in `choose`, its value in
//! the proto's `Transport` enum, and its reader in the Python client (`clients/python`).

mod cuda_ipc;
mod inline;
mod shm;

use std::sync::Arc;

use augserve_core::buffers::OutputSlot;
use augserve_core::{Batch, BatchOps, Destination};
use augserve_proto::v1;

use crate::shm::ShmRegistry;

/// Makes a batch into the destination it is given (the pipeline's batch stage).
pub(crate) type Finish<'f> = Box<dyn FnOnce(Destination<'_>) -> augserve_core::Result<Batch> + 'f>;

/// A batch made into a transport's destination: the slot it went to (none inline) and the
/// tensor bytes it carries; inline, the buffer holding them, which the message then owns.
pub(crate) struct Delivered {
    pub batch: Batch,
    pub slot: Option<v1::SlotRef>,
    pub length: usize,
    pub inline_data: Option<OutputSlot>,
}

/// A transport's destination for one batch ([`Transport::reserve`]); dropped unused, it is
/// free again.
pub(crate) trait Reserved: Send {
    /// Runs `finish` into the destination; a failed batch leaves it free again.
    fn deliver(self: Box<Self>, finish: Finish<'_>) -> augserve_core::Result<Delivered>;
}

/// One way of delivering tensors.
pub(crate) trait Transport: Send + Sync {
    /// The proto's name for it.
    fn kind(&self) -> v1::Transport;

    /// Fills in what the client needs to read the tensors (the first batch carries it).
    fn describe(&self, info: &mut v1::TransportInfo);

    /// The host memory a stream of batches of `batch_bytes` holds at worst, with `prefetch`
    /// queued and `in_flight` being made at once: its share of the server's batch memory
    /// budget.
    fn reserved_bytes(&self, prefetch: u32, in_flight: u32, batch_bytes: usize) -> u64;

    /// Takes this transport's next destination for one batch, waiting for a free slot where
    /// there are slots: the stream takes them in batch order, then makes its batches
    /// concurrently into them. `None`: `give_up()` said so while waiting.
    fn reserve(&self, give_up: &dyn Fn() -> bool) -> Option<Box<dyn Reserved + '_>>;

    /// The `TransportInfo` of a stream on this transport.
    fn info(&self, fallback_reason: String) -> v1::TransportInfo {
        let mut info = v1::TransportInfo {
            transport: self.kind() as i32,
            fallback_reason,
            cuda_device: -1,
            ..Default::default()
        };
        self.describe(&mut info);
        info
    }
}

/// Picks a stream's transport: what the client asked for where possible, else the next best
/// (CUDA IPC -> SHM -> inline), with the reasons. `local`: the client is on this host;
/// `batches_held`: the most batches the stream holds at once (its in-flight tokens), the
/// inline transport's buffer count.
pub(crate) fn choose(
    wanted: v1::Transport,
    local: bool,
    slots: u32,
    batches_held: u32,
    slot_bytes: usize,
    ops: &dyn BatchOps,
    shm: &ShmRegistry,
) -> (Arc<dyn Transport>, String) {
    let mut reasons = Vec::new();
    if wanted == v1::Transport::CudaIpc {
        match cuda_ipc::CudaIpc::open(local, slots, slot_bytes, ops, shm) {
            Ok(t) => return (Arc::new(t), String::new()),
            Err(e) => reasons.push(format!("cuda_ipc: {e}")),
        }
    }
    if wanted != v1::Transport::Inline {
        match shm::Shm::open(local, slots, slot_bytes, ops, shm) {
            Ok(t) => return (Arc::new(t), reasons.join("; ")),
            Err(e) => reasons.push(format!("shm: {e}")),
        }
    }
    (
        Arc::new(inline::Inline::open(batches_held, slot_bytes, ops)),
        reasons.join("; "),
    )
}
