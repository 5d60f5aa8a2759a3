//! Compiles proto/augserve/v1/augserve.proto with protox (pure Rust, no protoc binary) and
//! generates the tonic client and server, plus the descriptor set for gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let file = root.join("augserve/v1/augserve.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("augserve_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .bytes(".augserve.v1.Tensor.data")
        .bytes(".augserve.v1.AugmentImagesRequest.images")
        .compile_fds(fds)?;
    Ok(())
}
