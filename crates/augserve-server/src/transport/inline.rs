//! Inline delivery: the tensor travels in the gRPC message itself.

use augserve_core::Destination;
use augserve_proto::v1;

use super::{Delivered, Finish, Reserved, Transport};

pub(crate) struct Inline;

impl Transport for Inline {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Inline
    }

    fn describe(&self, _info: &mut v1::TransportInfo) {}

    fn reserved_bytes(&self, prefetch: u32, in_flight: u32, batch_bytes: usize) -> u64 {
        // Queued batches, those being made, and the copy tonic encodes the one being sent into.
        (u64::from(prefetch) + u64::from(in_flight) + 1) * batch_bytes as u64
    }

    fn reserve(&self, _give_up: &dyn Fn() -> bool) -> Option<Box<dyn Reserved + '_>> {
        Some(Box::new(InlineBatch))
    }
}

/// An inline batch's destination: a buffer of its own.
struct InlineBatch;

impl Reserved for InlineBatch {
    fn deliver(self: Box<Self>, finish: Finish<'_>) -> augserve_core::Result<Delivered> {
        finish(Destination::Owned).map(|batch| Delivered {
            length: batch.tensor.data.len(),
            batch,
            slot: None,
        })
    }
}
