//! Waggle's wire contract.

/// The Zeebe client API (`gateway_protocol.Gateway`), generated from `proto/gateway.proto`.
///
/// Waggle answers the same gRPC calls as a Zeebe gateway so that existing Zeebe clients and
/// workers run against it unchanged. The proto is Waggle's own file but every name, number and
/// type in it is fixed by that protocol; `tests/proto_compat.rs` holds it to the protos that the
/// real clients ship.
pub mod gateway {
    tonic::include_proto!("gateway_protocol");
}

/// The broker-internal service (`waggle.broker.Broker`), generated from `proto/broker.proto`.
///
/// Gateways use it to route client commands to partition leaders and to learn which job types
/// became activatable; brokers use it for raft replication. Its messages are thin envelopes
/// around postcard-encoded payloads, so the engine's types can evolve without touching protobuf.
pub mod broker_rpc {
    tonic::include_proto!("waggle.broker");
}

/// Encoded `FileDescriptorSet` of both protos, for gRPC server reflection and for tests that
/// inspect the contract the crate was actually built from.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/waggle_descriptor.bin"));

pub mod command;
pub mod key;
pub mod partition;
pub mod record;
pub mod topology;
