//! Commands that used to take brokers down: a process whose FEEL recurses without end, a FEEL
//! `for` that grows without bound, and a loop of elements that never waits. Each must now end as an
//! incident on its instance while the three brokers stay up and go on serving other work.
//!
//! Before the FEEL limits, creating one instance of the recursive process overflowed the leader's
//! stack; the gateway retried the command on each new leader in turn and took two of the three
//! brokers down. This test runs the same sequence against real `waggle` processes (see
//! `cluster_support`), with the usual load alongside, and checks that no broker exits and that the
//! load keeps being acknowledged on every partition.

// The harness serves the failover tests too; this binary uses only part of it.
#[allow(dead_code)]
mod cluster_support;

use std::time::{Duration, Instant};

use cluster_support::workload::{self, Workload};
use cluster_support::{Cluster, Network, BROKERS, PARTITIONS};
use tonic::Request;
use waggle_protocol::gateway::{CreateProcessInstanceRequest, DeployResourceRequest, Resource};

const DEPLOY_LIMIT: Duration = Duration::from_secs(30);
const SERVING_LIMIT: Duration = Duration::from_secs(30);
/// Smaller processing runs than the defaults (1000 steps, 100 deferrals), so that the endless loop
/// meets its incident after 4000 steps instead of 100 000.
const MAX_STEPS_PER_RUN: &str = "200";
const MAX_DEFERRALS_WITHOUT_WAIT: &str = "20";
/// How long the loop of elements may take before its incident shows in the metrics.
const LOOP_INCIDENT_LIMIT: Duration = Duration::from_secs(60);

/// A service task whose input mapping is `expression`.
fn mapped_task(process_id: &str, expression: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="{process_id}" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:serviceTask id="work"><bpmn:extensionElements><zeebe:taskDefinition type="never-worked" /><zeebe:ioMapping><zeebe:input source="{expression}" target="x" /></zeebe:ioMapping></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
    <bpmn:endEvent id="end" />
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// A gateway and a throw event that go round forever: no element ever waits.
const ENDLESS_LOOP: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="t">
  <bpmn:process id="endless" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:sequenceFlow id="f0" sourceRef="start" targetRef="count" />
    <bpmn:intermediateThrowEvent id="count"><bpmn:extensionElements><zeebe:ioMapping><zeebe:output source="= n + 1" target="n" /></zeebe:ioMapping></bpmn:extensionElements></bpmn:intermediateThrowEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="count" targetRef="again" />
    <bpmn:exclusiveGateway id="again" />
    <bpmn:sequenceFlow id="loop" sourceRef="again" targetRef="count" />
  </bpmn:process>
</bpmn:definitions>"#;

async fn deploy(cluster: &Cluster, name: &str, xml: &str) {
    let deadline = Instant::now() + DEPLOY_LIMIT;
    loop {
        let mut request = Request::new(DeployResourceRequest {
            resources: vec![Resource { name: name.into(), content: xml.as_bytes().to_vec() }],
            tenant_id: String::new(),
        });
        request.set_timeout(Duration::from_secs(10));
        match cluster.client().deploy_resource(request).await {
            Ok(_) => return,
            Err(status) => {
                assert!(Instant::now() < deadline, "deploying {name} failed for {DEPLOY_LIMIT:?}: {status}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Creates one instance per partition (creations go round-robin) and expects every answer.
async fn create_on_every_partition(cluster: &Cluster, process_id: &str, variables: &str) {
    for _ in 0..PARTITIONS {
        let mut request = Request::new(CreateProcessInstanceRequest {
            bpmn_process_id: process_id.into(),
            version: -1,
            variables: variables.into(),
            ..Default::default()
        });
        request.set_timeout(Duration::from_secs(10));
        let created = cluster.client().create_process_instance(request).await;
        let created = created.unwrap_or_else(|status| panic!("creating {process_id} failed: {status}"));
        cluster.clock.note(format!(
            "created {process_id} instance {} on partition {}",
            created.get_ref().process_instance_key,
            workload::partition_of(created.get_ref().process_instance_key)
        ));
    }
}

async fn assert_all_brokers_serve(cluster: &mut Cluster, workload: &Workload, since: Instant) {
    let serving = workload.wait_for_creations_on_every_partition(since, PARTITIONS, SERVING_LIMIT).await;
    cluster.clock.note(format!("the load is acknowledged on every partition again {serving:?} later"));
    assert_eq!(cluster.exited_brokers(), vec![], "no broker may exit");
    for node in 0..BROKERS {
        cluster.metrics(node).await.unwrap_or_else(|e| panic!("broker {node} does not answer: {e}"));
    }
}

/// The sum of a counter over every broker's metrics.
async fn counter_sum(cluster: &Cluster, name: &str) -> u64 {
    let mut sum = 0;
    for node in 0..BROKERS {
        if let Ok(text) = cluster.metrics(node).await {
            sum += text
                .lines()
                .filter(|line| line.starts_with(name))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64;
        }
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_that_recurse_grow_or_loop_forever_raise_incidents_and_no_broker_goes_down() {
    // The brokers read these like any other setting; this test binary starts no other cluster.
    std::env::set_var("WAGGLE_MAX_STEPS_PER_RUN", MAX_STEPS_PER_RUN);
    std::env::set_var("WAGGLE_MAX_DEFERRALS_WITHOUT_WAIT", MAX_DEFERRALS_WITHOUT_WAIT);
    let mut cluster = Cluster::start(Network::Direct).await;
    workload::deploy(&cluster.client(), DEPLOY_LIMIT).await;
    let workload = Workload::start(&cluster.client());
    let recursion = "= {f: function(g, n) if n = 0 then 0 else 1 + g(g, n - 1), r: f(f, 1000000)}.r";
    deploy(&cluster, "recursion.bpmn", &mapped_task("recursion", recursion)).await;
    deploy(&cluster, "growth.bpmn", &mapped_task("growth", "= for x in 1..1000, y in 1..1000, z in 1..1000 return x"))
        .await;
    deploy(&cluster, "endless.bpmn", ENDLESS_LOOP).await;

    let started = Instant::now();
    create_on_every_partition(&cluster, "recursion", "{}").await;
    assert_all_brokers_serve(&mut cluster, &workload, started).await;

    let started = Instant::now();
    create_on_every_partition(&cluster, "growth", "{}").await;
    assert_all_brokers_serve(&mut cluster, &workload, started).await;

    let started = Instant::now();
    create_on_every_partition(&cluster, "endless", r#"{"n": 0}"#).await;
    assert_all_brokers_serve(&mut cluster, &workload, started).await;
    let deadline = Instant::now() + LOOP_INCIDENT_LIMIT;
    loop {
        let deferred = counter_sum(&cluster, "waggle_deferred_activations_total").await;
        let incidents = counter_sum(&cluster, "waggle_endless_loop_incidents_total").await;
        if incidents >= u64::from(PARTITIONS) {
            cluster.clock.note(format!(
                "{incidents} endless-loop incidents after {deferred} deferred activations, {:?} after the creations",
                started.elapsed()
            ));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {incidents} endless-loop incidents ({deferred} deferred activations) after {LOOP_INCIDENT_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_all_brokers_serve(&mut cluster, &workload, Instant::now()).await;
    cluster.clock.note(workload.summary());
    workload.stop().await;
}
