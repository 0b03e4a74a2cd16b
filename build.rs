//! Compiles the wire contracts under `proto/` with protox (a pure-Rust protobuf compiler), so a
//! fresh machine builds without a system `protoc`, and keeps the descriptor set for gRPC reflection.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/foghorn/v1/helmsman.proto",
        "proto/foghorn/v1/provisioning.proto",
        "proto/foghorn/v1/federation.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("foghorn_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The RPC is named `Connect` (DESIGN.md §4); the generated client constructor of the same name
        // would clash with it, so clients are built with `::new(channel)` instead.
        .build_transport(false)
        .codec_path("crate::grpc::CompactCodec")
        .compile_fds(fds)?;
    Ok(())
}
