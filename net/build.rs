//! Compiles `proto/wwt.proto` and `proto/index.proto` with the vendored `protoc`, so a
//! fresh machine needs none.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // `set_var("PROTOC")` is unsafe in edition 2024: hand the path to the builder instead.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("wwt_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/wwt.proto", "proto/index.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto/wwt.proto");
    println!("cargo:rerun-if-changed=proto/index.proto");
    Ok(())
}
