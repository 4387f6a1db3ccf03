//! Generates the gRPC code for Waggle's two services into OUT_DIR.
//!
//! Both client and server stubs are built for both services: the gateway serves `Gateway` and
//! tests call it as a client; brokers serve `Broker`, gateways and other brokers call it.

use std::{env, io, path::PathBuf};

fn main() -> io::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("waggle_descriptor.bin"))
        .compile_protos(&["proto/gateway.proto", "proto/broker.proto"], &["proto"])
}
