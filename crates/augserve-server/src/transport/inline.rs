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
    /// `batches_held` buffers of `slot_bytes`: one for each batch the stream's in-flight
    /// tokens let exist (queued, being made, the one tonic took last, whose buffer is back
    /// once tonic has encoded it), so a batch that has its token finds a buffer free.
    pub(crate) fn open(batches_held: u32, slot_bytes: usize, ops: &dyn BatchOps) -> Self {
        Inline {
            buffers: OutputSlots::new(ops, batches_held as usize, slot_bytes),
        }
    }
}

impl Transport for Inline {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Inline
    }

    fn describe(&self, _info: &mut v1::TransportInfo) {}

    fn reserved_bytes(&self, _prefetch: u32, _in_flight: u32, _batch_bytes: usize) -> u64 {
        // The buffers (queued batches, those being made, the one tonic took last) and the
        // copy tonic encoded that one into.
        (self.buffers.count() as u64 + 1) * self.buffers.bytes() as u64
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
