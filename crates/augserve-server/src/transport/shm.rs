//! Shared-memory delivery: the batch ops write each tensor straight into a free slot of a
//! ring the client maps (`crate::shm`); the message says which slot.

use std::sync::Arc;

use augserve_core::Destination;
use augserve_proto::v1;

use super::{tensor_len, Delivered, Finish, Transport};
use crate::shm::{ShmRegistry, ShmRing};

pub(crate) struct Shm(Arc<ShmRing>);

impl Shm {
    pub(crate) fn open(
        local: bool,
        slots: u32,
        slot_bytes: usize,
        registry: &ShmRegistry,
    ) -> Result<Self, String> {
        if !local {
            return Err("the client is not on this host (use the Unix socket or loopback)".into());
        }
        if let Some(why) = registry.unavailable() {
            return Err(why);
        }
        registry.create(slots, slot_bytes).map(Shm)
    }
}

impl Transport for Shm {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Shm
    }

    fn describe(&self, t: &mut v1::TransportInfo) {
        t.stream_id = self.0.id().to_string();
        t.shm_path = self.0.path().display().to_string();
        t.slot_bytes = self.0.slot_bytes() as u64;
        t.slots = self.0.slots();
    }

    fn reserved_bytes(&self, _prefetch: u32, _batch_bytes: usize) -> u64 {
        u64::from(self.0.slots()) * self.0.slot_bytes() as u64
    }

    fn deliver(
        &self,
        give_up: &dyn Fn() -> bool,
        finish: Finish<'_>,
    ) -> Option<augserve_core::Result<Delivered>> {
        let filled = self.0.fill(give_up, |buf| {
            finish(Destination::Host(buf)).map(|b| {
                let written = tensor_len(&b);
                (b, written)
            })
        })?;
        Some(filled.map(|(batch, w)| Delivered {
            batch,
            slot: Some(v1::SlotRef {
                slot: w.slot,
                generation: w.generation,
                offset: w.offset,
                length: w.length,
            }),
            length: w.length as usize,
        }))
    }
}
