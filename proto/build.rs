//! Compiles the .proto files with protox (pure Rust), so no protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "troop/agent/v1/agent.proto",
        "troop/coordinator/v1/coordinator.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
