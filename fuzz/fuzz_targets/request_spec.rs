//! Arbitrary bytes as the server's request messages (protobuf decoding, then spec conversion,
//! validation and shard checks, as the service does), and as a pipeline spec file (TOML/JSON).
//! Must never panic: every bad field is an error naming it.
#![no_main]

use augserve_core::{PipelineSpec, ShardSpec};
use augserve_proto::convert::{spec_from_proto, tail_from_proto};
use augserve_proto::v1;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = v1::StreamBatchesRequest::decode(data) {
        if let Ok(spec) = spec_from_proto(r.spec.as_ref()) {
            let _ = spec.output_image_bytes();
        }
        if let Ok(tail) = tail_from_proto(r.tail) {
            let shard = ShardSpec {
                seed: r.seed,
                shuffle: !r.no_shuffle,
                rank: r.rank,
                world_size: r.world_size.max(1),
                tail,
            };
            // Sharding a small dataset: any rank/world combination must be an error or a plan.
            if shard.validate().is_ok() && shard.world_size < 4096 {
                let _ = shard.epoch_ids(1000, r.start_epoch);
            }
        }
    }
    if let Ok(r) = v1::AugmentImagesRequest::decode(data) {
        let _ = spec_from_proto(r.spec.as_ref());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PipelineSpec::from_toml_str(text);
        let _ = PipelineSpec::from_json_str(text);
    }
});
