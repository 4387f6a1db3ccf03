//! Raft messages between replicas, carried by the broker-internal gRPC service.
//!
//! Requests and responses are postcard-encoded openraft types inside a `RaftEnvelope` that names the
//! partition, so one connection between two brokers serves every partition they share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};
use waggle_protocol::broker_rpc::broker_client::BrokerClient;
use waggle_protocol::broker_rpc::RaftEnvelope;

use super::{encode, TypeConfig};

/// Which raft message a `RaftEnvelope` carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftKind {
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
}

impl RaftKind {
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(RaftKind::AppendEntries),
            2 => Some(RaftKind::Vote),
            3 => Some(RaftKind::InstallSnapshot),
            _ => None,
        }
    }
}

/// Lazily connected channels to peers, shared by every partition of this broker.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub(crate) fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peer channel map is never poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(std::time::Duration::from_millis(500))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Creates raft clients for one partition.
///
/// A peer is reached at the address this broker's own configuration gives for its node id, not the
/// one recorded in the raft membership: addresses may change between restarts (a pod gets a new IP)
/// and may differ per broker (proxies, NAT), while node ids do not.
pub struct NetworkFactory {
    pub partition_id: u32,
    pub peers: Peers,
    pub addresses: Arc<Vec<String>>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        let addr = self.addresses.get(target as usize).cloned().unwrap_or_else(|| node.addr.clone());
        PeerClient { partition_id: self.partition_id, target, addr, peers: self.peers.clone() }
    }
}

pub struct PeerClient {
    partition_id: u32,
    target: u64,
    addr: String,
    peers: Peers,
}

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RaftKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let channel = self.peers.channel(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = BrokerClient::new(channel).max_decoding_message_size(64 * 1024 * 1024);
        let mut call = tonic::Request::new(RaftEnvelope {
            partition_id: self.partition_id,
            kind: kind as u32,
            payload: encode(request),
        });
        call.set_timeout(option.hard_ttl());
        let reply = client.raft(call).await.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, E> =
            postcard::from_bytes(&reply.into_inner().payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(RaftKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(RaftKind::Vote, &rpc, &option).await
    }
}
