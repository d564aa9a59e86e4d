//! Compiles the protobuf files with protox (pure Rust), so building needs no
//! system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["internal.proto", "dyno.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    // Objects and values as `Bytes`: a write's fan-out encodes the object
    // once and every replica message shares it, and received values are
    // not copied out of the receive buffer.
    tonic_prost_build::configure()
        .bytes(".dyno.internal.v1.ReplicaPutRequest.object")
        .bytes(".dyno.internal.v1.ReplicaGetResponse.object")
        .bytes(".dyno.internal.v1.CoordinatePutRequest.value")
        .compile_fds(fds)?;
    Ok(())
}
