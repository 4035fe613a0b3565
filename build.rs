//! Compiles `proto/keyorch/v1/*.proto` with protox (pure Rust), so building needs no protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/keyorch/v1/common.proto",
        "proto/keyorch/v1/vault.proto",
        "proto/keyorch/v1/keystore.proto",
        "proto/keyorch/v1/key.proto",
        "proto/keyorch/v1/crypto.proto",
        "proto/keyorch/v1/audit.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The reflection service serves this encoded descriptor set.
    std::fs::write(
        out.join("keyorch_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
