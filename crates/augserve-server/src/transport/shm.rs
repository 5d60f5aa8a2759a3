//! Shared-memory delivery: the batch ops write each tensor straight into a free slot of a
//! ring the client maps (`crate::shm`); the message says which slot. The ring is registered
//! with the batch ops for its whole life, so a GPU downloads each batch straight into its slot.

use std::sync::Arc;

use augserve_core::pipeline::{BatchOps, HostOutputRegistration};
use augserve_core::Destination;
use augserve_proto::v1;

use super::{Delivered, Finish, Reserved, Transport};
use crate::shm::{ShmRegistry, ShmRing, SlotLease};

pub(crate) struct Shm {
    /// Dropped before `ring` (declaration order): the registration ends while the ring's
    /// mapping is still there.
    _registration: Option<HostOutputRegistration>,
    ring: Arc<ShmRing>,
}

impl Shm {
    pub(crate) fn open(
        local: bool,
        slots: u32,
        slot_bytes: usize,
        ops: &dyn BatchOps,
        registry: &ShmRegistry,
    ) -> Result<Self, String> {
        if !local {
            return Err("the client is not on this host (use the Unix socket or loopback)".into());
        }
        if let Some(why) = registry.unavailable() {
            return Err(why);
        }
        let ring = registry.create(slots, slot_bytes)?;
        let (start, len) = ring.mapping();
        // SAFETY: the mapping is the ring's, which `Shm` keeps alive (its `ring`) until after
        // the registration is dropped (field order).
        let registration = unsafe { ops.register_host_output(start, len) };
        Ok(Shm {
            _registration: registration,
            ring,
        })
    }
}

impl Transport for Shm {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Shm
    }

    fn describe(&self, t: &mut v1::TransportInfo) {
        t.stream_id = self.ring.id().to_string();
        t.shm_path = self.ring.path().display().to_string();
        t.slot_bytes = self.ring.slot_bytes() as u64;
        t.slots = self.ring.slots();
    }

    fn reserved_bytes(&self, _prefetch: u32, _in_flight: u32, _batch_bytes: usize) -> u64 {
        u64::from(self.ring.slots()) * self.ring.slot_bytes() as u64
    }

    fn reserve(&self, give_up: &dyn Fn() -> bool) -> Option<Box<dyn Reserved + '_>> {
        Some(Box::new(ShmBatch(self.ring.lease(give_up)?)))
    }
}

/// A shared-memory batch's destination: a slot of the ring, taken for it.
struct ShmBatch<'r>(SlotLease<'r>);

impl Reserved for ShmBatch<'_> {
    fn deliver(self: Box<Self>, finish: Finish<'_>) -> augserve_core::Result<Delivered> {
        let filled = self.0.fill(|buf| {
            finish(Destination::Host(buf)).map(|b| {
                let written = b.tensor.byte_len();
                (b, written)
            })
        });
        filled.map(|(batch, w)| Delivered {
            batch,
            slot: Some(v1::SlotRef {
                slot: w.slot,
                generation: w.generation,
                offset: w.offset,
                length: w.length,
            }),
            length: w.length as usize,
            inline_data: None,
        })
    }
}
