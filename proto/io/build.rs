//! Compiles `proto/io/rpc.proto` with a pure-Rust protobuf compiler (protox), so a fresh
//! checkout builds without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=rpc.proto");
    let fds = protox::compile(["rpc.proto"], ["."])?;
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
