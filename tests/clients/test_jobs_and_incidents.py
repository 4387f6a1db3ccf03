"""Job lifecycle and incident behaviour (issue 2, points 5 and 6) through the gRPC stub pyzeebe ships:
long polling, job deadlines, UpdateJobTimeout, incidents from conditions and FEEL failures resolved after
SetVariables, BroadcastSignal."""

from __future__ import annotations

import json
import threading
import time
import uuid

import grpc
from pyzeebe.proto import gateway_pb2 as pb

from conftest import activate, create, deploy, is_finished, job_for, resolve_incident_near, wait_until


def fence(stub) -> int:
    """A key issued now (PublishMessage answers with one): an upper bound for keys issued before."""
    return stub.PublishMessage(pb.PublishMessageRequest(name="fence", correlationKey=uuid.uuid4().hex), timeout=10).key


def test_activate_jobs_long_poll_answers_as_soon_as_a_job_appears(gateway):
    deploy(gateway, "sdk-stream.bpmn", "py-order-flow.bpmn")
    job_type = "flow-notify"
    # Drain, so the long poll below really has to wait.
    for job in activate(gateway, job_type, request_timeout_ms=200):
        gateway.FailJob(pb.FailJobRequest(jobKey=job.key, retries=job.retries), timeout=10)
    result = {}

    def poll():
        began = time.monotonic()
        result["jobs"] = activate(gateway, job_type, max_jobs=1, request_timeout_ms=10_000)
        result["answered_after"] = time.monotonic() - began

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.7)  # the poll must be waiting when the job is created; this is the point of the test
    created_at = time.monotonic()
    instance = create(gateway, "py-order-flow", {"amount": 1, "orderId": uuid.uuid4().hex})
    poller.join(timeout=15)
    assert not poller.is_alive()
    assert [j.processInstanceKey for j in result["jobs"]] == [instance.processInstanceKey]
    assert result["answered_after"] >= 0.6, "the long poll answered before a job existed"
    assert time.monotonic() - created_at < 3, "the long poll was not answered as soon as the job appeared"
    gateway.CancelProcessInstance(pb.CancelProcessInstanceRequest(processInstanceKey=instance.processInstanceKey),
                                  timeout=10)

    # A long poll that finds nothing answers with no jobs after its requestTimeout.
    began = time.monotonic()
    assert activate(gateway, "nobody-creates-this-type", request_timeout_ms=500) == []
    assert 0.4 <= time.monotonic() - began < 5


def test_job_not_completed_before_its_deadline_is_activatable_again(gateway):
    deploy(gateway, "py-flaky.bpmn")
    instance = create(gateway, "py-flaky").processInstanceKey
    first = job_for(gateway, "py-flaky", instance, timeout_ms=1000)
    activated_at = time.monotonic()
    again = job_for(gateway, "py-flaky", instance, timeout_s=15, timeout_ms=30_000)
    assert again.key == first.key
    assert time.monotonic() - activated_at >= 0.9, "the job was handed out again before its deadline"
    # The first worker's lock is gone: its completion is rejected or accepted, but never completes twice.
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=again.key), timeout=10)
    assert wait_until(lambda: is_finished(gateway, instance), 10, "the instance to complete")


def test_update_job_timeout_shortens_the_lock(gateway):
    deploy(gateway, "py-flaky.bpmn")
    instance = create(gateway, "py-flaky").processInstanceKey
    job = job_for(gateway, "py-flaky", instance, timeout_ms=600_000)
    gateway.UpdateJobTimeout(pb.UpdateJobTimeoutRequest(jobKey=job.key, timeout=500), timeout=10)
    again = job_for(gateway, "py-flaky", instance, timeout_s=15)
    assert again.key == job.key
    gateway.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=job.key, retries=7), timeout=10)
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)
    assert wait_until(lambda: is_finished(gateway, instance), 10, "the instance to complete")


def test_no_matching_condition_raises_incident_resolved_after_set_variables(gateway):
    deploy(gateway, "no-matching-flow.bpmn")
    instance = create(gateway, "no-matching-flow", {"route": "nowhere"}).processInstanceKey
    upper = fence(gateway)
    assert not is_finished(gateway, instance), "the instance must wait in an incident"
    # Resolving without fixing the data raises the incident again; fix the variable first.
    gateway.SetVariables(pb.SetVariablesRequest(elementInstanceKey=instance, variables='{"route": "b"}'), timeout=10)
    resolve_incident_near(gateway, instance, upper)
    job = job_for(gateway, "route-b", instance)
    assert json.loads(job.variables)["route"] == "b"
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)
    assert wait_until(lambda: is_finished(gateway, instance), 10, "the instance to complete")


def test_failing_feel_expression_raises_incident_resolved_after_set_variables(gateway):
    deploy(gateway, "feel-failure.bpmn")
    instance = create(gateway, "feel-failure").processInstanceKey
    upper = fence(gateway)
    assert not is_finished(gateway, instance), "the instance must wait in an incident"
    gateway.SetVariables(pb.SetVariablesRequest(elementInstanceKey=instance, variables='{"kind": "fixed"}'), timeout=10)
    resolve_incident_near(gateway, instance, upper)
    job = job_for(gateway, "feel-fixed", instance)
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)
    assert wait_until(lambda: is_finished(gateway, instance), 10, "the instance to complete")


def test_set_variables_local_and_propagated(gateway):
    deploy(gateway, "py-flaky.bpmn")
    instance = create(gateway, "py-flaky", {"a": 1}).processInstanceKey
    job = job_for(gateway, "py-flaky", instance)
    response = gateway.SetVariables(
        pb.SetVariablesRequest(elementInstanceKey=instance, variables='{"a": 2, "b": "x"}'), timeout=10)
    assert response.key > 0
    gateway.FailJob(pb.FailJobRequest(jobKey=job.key, retries=3), timeout=10)  # hand it back
    job = job_for(gateway, "py-flaky", instance)
    assert json.loads(job.variables) == {"a": 2, "b": "x"}
    gateway.CompleteJob(pb.CompleteJobRequest(jobKey=job.key), timeout=10)


def test_broadcast_signal_is_accepted(gateway):
    response = gateway.BroadcastSignal(pb.BroadcastSignalRequest(signalName="nobody-listens", variables='{"x": 1}'),
                                       timeout=10)
    assert response.key > 0
    assert response.tenantId == "<default>"
    try:
        gateway.BroadcastSignal(pb.BroadcastSignalRequest(signalName=""), timeout=10)
        raise AssertionError("an empty signal name was accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "signalName" in e.details()
