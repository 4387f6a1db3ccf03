//! What the broker's integration tests share: the one-task model, the commands they send, and
//! calls to a broker's command service and management port over real sockets.

#![allow(dead_code)]

use waggle_protocol::broker_rpc::broker_client::BrokerClient;
use waggle_protocol::broker_rpc::CommandEnvelope;
use waggle_protocol::command::{
    self, AwaitResult, BrokerReply, ClientCommand, CreateProcessInstance, RequestId, DEFAULT_TENANT,
};
use waggle_protocol::record::DeploymentResource;

pub const MODEL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="one" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work"><bpmn:extensionElements><zeebe:taskDefinition type="work" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#;

pub async fn execute(addr: std::net::SocketAddr, command: &ClientCommand) -> BrokerReply {
    execute_as(addr, command, 0).await
}

/// Executes `command` as the client request `request_id` (0: none), as a gateway's attempt would.
pub async fn execute_as(addr: std::net::SocketAddr, command: &ClientCommand, request_id: RequestId) -> BrokerReply {
    let mut client = BrokerClient::connect(format!("http://{addr}")).await.expect("broker answers");
    let reply = client
        .execute(CommandEnvelope { partition_id: 1, payload: command::encode(command), request_id })
        .await
        .expect("execute succeeds at the transport level");
    command::decode::<BrokerReply>(&reply.into_inner().payload).expect("reply decodes")
}

/// Sends `command` until the answer satisfies `done`, for at most `limit`; the last answer.
pub async fn execute_until(
    addr: std::net::SocketAddr,
    command: &ClientCommand,
    limit: std::time::Duration,
    done: impl Fn(&BrokerReply) -> bool,
) -> BrokerReply {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let reply = execute(addr, command).await;
        if done(&reply) || std::time::Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

pub fn deploy() -> ClientCommand {
    ClientCommand::Deploy {
        resources: vec![DeploymentResource { name: "one.bpmn".into(), content: MODEL.as_bytes().to_vec() }],
        tenant_id: DEFAULT_TENANT.into(),
    }
}

pub fn create() -> ClientCommand {
    ClientCommand::CreateProcessInstance(creation(None))
}

pub fn creation(await_result: Option<AwaitResult>) -> CreateProcessInstance {
    CreateProcessInstance {
        process_definition_key: 0,
        bpmn_process_id: "one".into(),
        version: -1,
        variables: r#"{"n": 1}"#.into(),
        tenant_id: DEFAULT_TENANT.into(),
        await_result,
    }
}

pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}
