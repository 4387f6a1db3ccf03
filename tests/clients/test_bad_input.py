"""Bad input never harms what was accepted (issue 2, point 7).

Each request goes through the generated gRPC stub that pyzeebe ships (so the test can send what a typed
client would refuse to build), must get the fitting status code with a message a user can act on, and
the node must keep serving: an instance started before the bad requests still completes after them.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pyzeebe.proto import gateway_pb2 as pb

from conftest import activate, create, deploy, is_finished, job_for, rpc_error, wait_until

UNKNOWN_KEY = 2251799813685249 + 10**9  # a well-formed partition-1 key that was never issued

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def expect(error: grpc.RpcError, code: grpc.StatusCode, *words: str):
    assert error.code() == code, f"expected {code}, got {error.code()}: {error.details()}"
    details = error.details() or ""
    assert details.strip(), f"{code} without a message"
    for word in words:
        assert word.lower() in details.lower(), f"message {details!r} does not mention {word!r}"


@pytest.fixture
def accepted(gateway):
    """An instance accepted before the bad input; the test completes it afterwards."""
    deploy(gateway, "py-flaky.bpmn")
    instance = create(gateway, "py-flaky")
    yield instance
    job = job_for(gateway, "py-flaky", instance.processInstanceKey)
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)
    assert wait_until(lambda: is_finished(gateway, instance.processInstanceKey), 10, "the accepted instance to end")


def test_grpc_health_service_reports_serving(node):
    channel, _ = node.stub()
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("gateway_protocol.Gateway", ""):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_topology_describes_one_healthy_leader(gateway):
    # Polled with a short deadline: right after readiness the gateway's view may lag by a moment.
    def leader():
        topology = gateway.Topology(pb.TopologyRequest(), timeout=10)
        partitions = [(p.partitionId, p.role, p.health) for b in topology.brokers for p in b.partitions]
        return topology if partitions == [
            (1, pb.Partition.PartitionBrokerRole.LEADER, pb.Partition.PartitionBrokerHealth.HEALTHY)] else None

    topology = wait_until(leader, 3, "Topology to report partition 1 as LEADER and HEALTHY")
    assert (topology.clusterSize, topology.partitionsCount, topology.replicationFactor) == (1, 1, 1)
    assert len(topology.brokers) == 1 and topology.brokers[0].version
    assert topology.gatewayVersion


@pytest.mark.parametrize("variables", ["{not json", "[1, 2, 3]", '"just a string"', "42", "null"])
def test_malformed_variables_are_invalid_argument(gateway, accepted, variables):
    deploy(gateway, "py-one-task.bpmn")
    error = rpc_error(gateway.CreateProcessInstance,
                      pb.CreateProcessInstanceRequest(bpmnProcessId="py-one-task", version=-1, variables=variables))
    expect(error, INVALID, "variables")
    error = rpc_error(gateway.PublishMessage,
                      pb.PublishMessageRequest(name="m", correlationKey="k", variables=variables))
    expect(error, INVALID, "variables")
    error = rpc_error(gateway.CompleteJob, pb.CompleteJobRequest(jobKey=UNKNOWN_KEY, variables=variables))
    expect(error, INVALID, "variables")
    error = rpc_error(gateway.SetVariables,
                      pb.SetVariablesRequest(elementInstanceKey=accepted.processInstanceKey, variables=variables))
    expect(error, INVALID, "variables")


def test_unknown_keys_and_ids_are_not_found(gateway, accepted):
    calls = [
        (gateway.CompleteJob, pb.CompleteJobRequest(jobKey=UNKNOWN_KEY)),
        (gateway.FailJob, pb.FailJobRequest(jobKey=UNKNOWN_KEY, retries=1)),
        (gateway.ThrowError, pb.ThrowErrorRequest(jobKey=UNKNOWN_KEY, errorCode="E")),
        (gateway.UpdateJobRetries, pb.UpdateJobRetriesRequest(jobKey=UNKNOWN_KEY, retries=3)),
        (gateway.UpdateJobTimeout, pb.UpdateJobTimeoutRequest(jobKey=UNKNOWN_KEY, timeout=1000)),
        (gateway.CancelProcessInstance, pb.CancelProcessInstanceRequest(processInstanceKey=UNKNOWN_KEY)),
        (gateway.ResolveIncident, pb.ResolveIncidentRequest(incidentKey=UNKNOWN_KEY)),
        (gateway.SetVariables, pb.SetVariablesRequest(elementInstanceKey=UNKNOWN_KEY, variables='{"a": 1}')),
        (gateway.CreateProcessInstance, pb.CreateProcessInstanceRequest(bpmnProcessId="no-such-process", version=-1)),
        (gateway.CreateProcessInstance, pb.CreateProcessInstanceRequest(processDefinitionKey=UNKNOWN_KEY)),
        (gateway.CreateProcessInstanceWithResult, pb.CreateProcessInstanceWithResultRequest(
            request=pb.CreateProcessInstanceRequest(bpmnProcessId="no-such-process", version=-1))),
    ]
    for call, request in calls:
        error = rpc_error(call, request)
        name = type(request).__name__
        assert error.code() == NOT_FOUND, f"{name}: expected NOT_FOUND, got {error.code()}: {error.details()}"
        assert str(UNKNOWN_KEY) in error.details() or "no-such-process" in error.details(), (
            f"{name}: the message should name what was not found: {error.details()!r}")


def test_completing_a_job_twice_is_not_found_the_second_time(gateway):
    deploy(gateway, "py-one-task.bpmn")
    instance = create(gateway, "py-one-task", {"amount": 1})
    job = job_for(gateway, "py-double", instance.processInstanceKey)
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key, variables='{"doubled": 2}'), timeout=10)
    expect(rpc_error(gateway.CompleteJob, pb.CompleteJobRequest(jobKey=job.key)), NOT_FOUND, str(job.key))
    expect(rpc_error(gateway.FailJob, pb.FailJobRequest(jobKey=job.key, retries=1)), NOT_FOUND, str(job.key))
    assert wait_until(lambda: is_finished(gateway, instance.processInstanceKey), 10, "the instance to end")


def test_negative_timeouts_and_counts_are_invalid_argument(gateway, accepted):
    cases = [
        ("ActivateJobs timeout", lambda: list(gateway.ActivateJobs(
            pb.ActivateJobsRequest(type="x", worker="w", timeout=-1, maxJobsToActivate=1), timeout=10)), "timeout"),
        ("ActivateJobs maxJobsToActivate", lambda: list(gateway.ActivateJobs(
            pb.ActivateJobsRequest(type="x", worker="w", timeout=1000, maxJobsToActivate=0), timeout=10)),
         "maxJobsToActivate"),
        ("StreamActivatedJobs timeout", lambda: next(iter(gateway.StreamActivatedJobs(
            pb.StreamActivatedJobsRequest(type="x", worker="w", timeout=-5), timeout=10))), "timeout"),
        ("UpdateJobTimeout", lambda: gateway.UpdateJobTimeout(
            pb.UpdateJobTimeoutRequest(jobKey=UNKNOWN_KEY, timeout=-1000), timeout=10), "timeout"),
        ("FailJob retryBackOff", lambda: gateway.FailJob(
            pb.FailJobRequest(jobKey=UNKNOWN_KEY, retries=1, retryBackOff=-1), timeout=10), "retryBackOff"),
        ("FailJob retries", lambda: gateway.FailJob(
            pb.FailJobRequest(jobKey=UNKNOWN_KEY, retries=-1), timeout=10), "retries"),
        ("UpdateJobRetries", lambda: gateway.UpdateJobRetries(
            pb.UpdateJobRetriesRequest(jobKey=UNKNOWN_KEY, retries=-2), timeout=10), "retries"),
        ("PublishMessage timeToLive", lambda: gateway.PublishMessage(
            pb.PublishMessageRequest(name="m", correlationKey="k", timeToLive=-1), timeout=10), "timeToLive"),
    ]
    for name, call, field in cases:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert error.value.code() == INVALID, f"{name}: expected INVALID_ARGUMENT, got {error.value.code()}: {error.value.details()}"
        assert field.lower() in error.value.details().lower(), f"{name}: message does not name {field}: {error.value.details()!r}"


def test_empty_names_are_invalid_argument(gateway, accepted):
    with pytest.raises(grpc.RpcError) as activate_error:
        list(gateway.ActivateJobs(pb.ActivateJobsRequest(type="", worker="w", timeout=1000, maxJobsToActivate=1),
                                  timeout=10))
    expect(activate_error.value, INVALID, "type")
    with pytest.raises(grpc.RpcError) as stream_error:
        next(iter(gateway.StreamActivatedJobs(pb.StreamActivatedJobsRequest(type="", worker="w", timeout=1000),
                                              timeout=10)))
    expect(stream_error.value, INVALID, "type")
    expect(rpc_error(gateway.PublishMessage, pb.PublishMessageRequest(name="", correlationKey="k")), INVALID, "name")
    expect(rpc_error(gateway.CreateProcessInstance, pb.CreateProcessInstanceRequest(version=-1)), INVALID)
    expect(rpc_error(gateway.DeployResource, pb.DeployResourceRequest(resources=[])), INVALID, "resource")
    expect(rpc_error(gateway.DeployResource, pb.DeployResourceRequest(
        resources=[pb.Resource(name="empty.bpmn", content=b"")])), INVALID, "empty.bpmn")
    expect(rpc_error(gateway.ThrowError, pb.ThrowErrorRequest(jobKey=UNKNOWN_KEY, errorCode="")), INVALID, "errorCode")


def test_oversized_payload_is_rejected_and_node_keeps_serving(gateway, accepted):
    big = json.dumps({"blob": "x" * (5 * 1024 * 1024)})
    error = rpc_error(gateway.CreateProcessInstance,
                      pb.CreateProcessInstanceRequest(bpmnProcessId="py-flaky", version=-1, variables=big), timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"got {error.code()}: {error.details()}"
    error = rpc_error(gateway.PublishMessage,
                      pb.PublishMessageRequest(name="big", correlationKey="k", variables=big), timeout=30)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, f"got {error.code()}: {error.details()}"
    # Something large but under the limit is accepted and comes back intact.
    deploy(gateway, "py-one-task.bpmn")
    blob = "y" * (1024 * 1024)
    instance = create(gateway, "py-one-task", {"amount": 1, "blob": blob})
    job = job_for(gateway, "py-double", instance.processInstanceKey)
    assert json.loads(job.variables)["blob"] == blob
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key, variables='{"doubled": 2}'), timeout=10)


def test_unimplemented_rpcs_answer_unimplemented_naming_the_rpc(gateway, accepted):
    error = rpc_error(gateway.EvaluateDecision, pb.EvaluateDecisionRequest(decisionId="d", variables="{}"))
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED, f"got {error.code()}: {error.details()}"
    assert "EvaluateDecision" in error.details()


def test_stream_activated_jobs_pushes_new_jobs(gateway):
    deploy(gateway, "sdk-stream.bpmn")
    stream = gateway.StreamActivatedJobs(
        pb.StreamActivatedJobsRequest(type="sdk-stream", worker="pusher", timeout=30_000), timeout=30)
    pushed: queue.Queue = queue.Queue()

    def consume():
        try:
            for job in stream:
                pushed.put(job)
        except grpc.RpcError as e:
            pushed.put(e)

    threading.Thread(target=consume, daemon=True).start()
    try:
        # The stream registers asynchronously and only carries jobs created after that; keep creating
        # instances (with a deadline) until the first job arrives on it.
        created = {}
        deadline = time.monotonic() + 15
        item = None
        while item is None and time.monotonic() < deadline:
            marker = uuid.uuid4().hex
            created[create(gateway, "sdk-stream", {"marker": marker}).processInstanceKey] = marker
            try:
                item = pushed.get(timeout=1)
            except queue.Empty:
                pass
        assert item is not None, "no job was pushed on StreamActivatedJobs within 15s"
        assert not isinstance(item, grpc.RpcError), f"the stream failed: {item.code()}: {item.details()}"
        assert item.type == "sdk-stream" and item.worker == "pusher"
        assert created[item.processInstanceKey] == json.loads(item.variables)["marker"]
        assert item.deadline > 0 and item.retries == 3
        gateway.CompleteJob(pb.CompleteJobRequest(jobKey=item.key), timeout=10)
    finally:
        stream.cancel()
    # Whatever the stream did not take is still activatable by polling.
    while not pushed.empty():
        job = pushed.get()
        if not isinstance(job, grpc.RpcError):
            gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)
