//! Generates the flagd gRPC services (server side only) from `proto/`, the protos of
//! open-feature/flagd-schemas copied into this repository.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(
            &[
                "proto/flagd/evaluation/v1/evaluation.proto",
                "proto/flagd/sync/v1/sync.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
