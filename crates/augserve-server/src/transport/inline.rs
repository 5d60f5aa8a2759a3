//! Inline delivery: the tensor travels in the gRPC message itself. Each batch is written
//! into a buffer of the stream's own [`OutputSlots`] (registered with the batch ops, so a GPU
//! downloads straight into it), which the message then owns until tonic has encoded it.

use std::sync::Arc;

use augserve_core::buffers::{OutputSlot, OutputSlots};
use augserve_core::{BatchOps, Destination};
use augserve_proto::v1;

use super::{Delivered, Finish, Reserved, Transport};

pub(crate) struct Inline {
    buffers: Arc<OutputSlots>,
}

impl Inline {
    /// `slots` buffers of `slot_bytes`: one for each queued batch, each being made, and the
    /// one tonic is encoding.
    pub(crate) fn open(slots: u32, slot_bytes: usize, ops: &dyn BatchOps) -> Self {
        Inline {
            buffers: OutputSlots::new(ops, slots as usize, slot_bytes),
        }
    }
}

impl Transport for Inline {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Inline
    }

    fn describe(&self, _info: &mut v1::TransportInfo) {}

    fn reserved_bytes(&self, prefetch: u32, in_flight: u32, batch_bytes: usize) -> u64 {
        // Queued batches, those being made, the one tonic encodes, and its encoded copy. The
        // buffers cover the first three (the stream's slot count), at most.
        let held = u64::from(prefetch) + u64::from(in_flight) + 1;
        (held + 1) * batch_bytes as u64
    }

    fn reserve(&self, give_up: &dyn Fn() -> bool) -> Option<Box<dyn Reserved + '_>> {
        Some(Box::new(InlineBatch(self.buffers.take(give_up)?)))
    }
}

/// An inline batch's destination: a buffer lent to it.
struct InlineBatch(OutputSlot);

impl Reserved for InlineBatch {
    fn deliver(self: Box<Self>, finish: Finish<'_>) -> augserve_core::Result<Delivered> {
        let mut buffer = self.0;
        let batch = finish(Destination::Host(buffer.buffer()))?;
        let length = batch.tensor.byte_len();
        buffer.set_len(length);
        Ok(Delivered {
            length,
            batch,
            slot: None,
            inline_data: Some(buffer),
        })
    }
}
