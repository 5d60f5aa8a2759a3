//! CUDA IPC delivery: the batch ops write each tensor into a free slot of device memory the
//! trainer maps on the same GPU (augserve-cuda's `IpcRing`); nothing reaches the host.

use std::sync::Arc;

use augserve_core::{BatchOps, Destination, DeviceOutput};
use augserve_proto::v1;

use super::{Delivered, Finish, Reserved, Transport};
use crate::shm::{BookLease, ShmRegistry, SlotBook};

pub(crate) struct CudaIpc {
    /// Which slots the client holds (released through ReleaseSlots, like SHM's).
    book: Arc<SlotBook>,
    ring: Arc<dyn DeviceOutput>,
}

impl CudaIpc {
    pub(crate) fn open(
        local: bool,
        slots: u32,
        slot_bytes: usize,
        ops: &dyn BatchOps,
        registry: &ShmRegistry,
    ) -> Result<Self, String> {
        if !local {
            return Err("the client is not on this host".into());
        }
        let ring = match ops.device_output(slots, slot_bytes) {
            None => return Err(format!("batch ops run on the CPU ({})", ops.device())),
            Some(made) => made.map_err(|e| e.to_string())?,
        };
        let book = registry.create_book(slots)?;
        Ok(CudaIpc { book, ring })
    }
}

impl Transport for CudaIpc {
    fn kind(&self) -> v1::Transport {
        v1::Transport::CudaIpc
    }

    fn describe(&self, t: &mut v1::TransportInfo) {
        t.stream_id = self.book.id().to_string();
        t.slot_bytes = self.ring.slot_bytes() as u64;
        t.slots = self.ring.slots();
        t.cuda_ipc_handle = self.ring.handle();
        t.cuda_device = self.ring.device_ordinal();
    }

    fn reserved_bytes(&self, _prefetch: u32, _in_flight: u32, _batch_bytes: usize) -> u64 {
        // Device memory, outside the host budget.
        0
    }

    fn reserve(&self, give_up: &dyn Fn() -> bool) -> Option<Box<dyn Reserved + '_>> {
        Some(Box::new(IpcBatch {
            ring: self.ring.as_ref(),
            lease: self.book.lease(give_up)?,
        }))
    }
}

/// A CUDA IPC batch's destination: a slot of the device ring, taken for it.
struct IpcBatch<'t> {
    ring: &'t dyn DeviceOutput,
    lease: BookLease<'t>,
}

impl Reserved for IpcBatch<'_> {
    fn deliver(self: Box<Self>, finish: Finish<'_>) -> augserve_core::Result<Delivered> {
        let (slot, generation) = (self.lease.slot(), self.lease.generation());
        let to = Destination::Device {
            memory: self.ring,
            slot,
        };
        // A failed batch drops the lease: nothing was announced in the slot, it is free again.
        let batch = finish(to)?;
        self.lease.keep();
        let length = batch.tensor.byte_len();
        Ok(Delivered {
            slot: Some(v1::SlotRef {
                slot,
                generation,
                offset: (slot as usize * self.ring.slot_bytes()) as u64,
                length: length as u64,
            }),
            length,
            batch,
            inline_data: None,
        })
    }
}
