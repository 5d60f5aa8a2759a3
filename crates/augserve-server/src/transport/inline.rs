//! Inline delivery: the tensor travels in the gRPC message itself.

use augserve_core::Destination;
use augserve_proto::v1;

use super::{Delivered, Finish, Transport};

pub(crate) struct Inline;

impl Transport for Inline {
    fn kind(&self) -> v1::Transport {
        v1::Transport::Inline
    }

    fn describe(&self, _info: &mut v1::TransportInfo) {}

    fn reserved_bytes(&self, prefetch: u32, batch_bytes: usize) -> u64 {
        // Queued batches and the one being sent, plus the copy tonic encodes it into.
        (u64::from(prefetch) + 2) * batch_bytes as u64
    }

    fn deliver(
        &self,
        _give_up: &dyn Fn() -> bool,
        finish: Finish<'_>,
    ) -> Option<augserve_core::Result<Delivered>> {
        Some(finish(Destination::Owned).map(|batch| Delivered {
            length: batch.tensor.data.len(),
            batch,
            slot: None,
        }))
    }
}
