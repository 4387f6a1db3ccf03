"""Durability (issue 2, point 8): `kill -9` a node while instances wait, start a new node on the same
data directory, and everything acknowledged is still there and continues: deployed processes, instances
waiting on jobs and on message subscriptions, buffered messages, incidents."""

from __future__ import annotations

import json
import signal

import grpc
from pyzeebe.proto import gateway_pb2 as pb

from conftest import (activate, activate_until, assert_clean_stop, create, deploy, is_finished,
                      resolve_incident_near, wait_until)

LONG_TTL_MS = 10 * 60 * 1000


def publish(stub, name: str, key: str, variables: dict, ttl_ms: int = 0, message_id: str = "") -> int:
    return stub.PublishMessage(pb.PublishMessageRequest(
        name=name, correlationKey=key, timeToLive=ttl_ms, variables=json.dumps(variables), messageId=message_id),
        timeout=10).key


def test_kill_9_then_restart_on_same_data_dir_loses_nothing_acknowledged(new_node, tmp_path):
    data_dir = tmp_path / "durable-data"
    first = new_node(data_dir).start()
    channel, stub = first.stub()

    deployed = deploy(stub, "durable.bpmn")
    definitions = {d.process.bpmnProcessId: d.process.processDefinitionKey for d in deployed.deployments}
    assert set(definitions) == {"durable-job", "durable-msg", "durable-buffered", "durable-incident"}

    # Instances waiting on a job: one never activated, one activated with a long lock (its worker "dies").
    job_waiters = [create(stub, "durable-job", {"i": i}).processInstanceKey for i in range(3)]
    locked = activate_until(stub, "durable-work", 1, timeout_ms=600_000)[0]
    # An instance waiting on a message subscription.
    msg_waiter = create(stub, "durable-msg", {"key": "k-wait"}).processInstanceKey
    # A message buffered before any instance wants it, with a messageId for deduplication.
    publish(stub, "durable-buffered", "k-buf", {"buffered": "yes"}, ttl_ms=LONG_TTL_MS, message_id="buf-1")
    # An incident: the only retry fails.
    incident_instance = create(stub, "durable-incident").processInstanceKey
    fragile = activate_until(stub, "durable-fail", 1)[0]
    stub.FailJob(pb.FailJobRequest(jobKey=fragile.key, retries=0, errorMessage="disk on fire"), timeout=10)
    fence = publish(stub, "durable-fence", "fence", {})  # a key issued after the incident
    channel.close()

    first.proc.send_signal(signal.SIGKILL)
    assert first.proc.wait(timeout=10) == -signal.SIGKILL

    second = new_node(data_dir).start()
    channel, stub = second.stub()
    try:
        # Deployed processes: still there, same keys, and a new deploy of the same file is not a new version.
        again = deploy(stub, "durable.bpmn")
        assert {d.process.bpmnProcessId: d.process.processDefinitionKey for d in again.deployments} == definitions
        by_id = create(stub, "durable-job", {"i": 99})
        assert by_id.processDefinitionKey == definitions["durable-job"]
        by_key = stub.CreateProcessInstance(pb.CreateProcessInstanceRequest(
            processDefinitionKey=definitions["durable-job"], variables='{"i": 100}'), timeout=10)
        job_waiters += [by_id.processInstanceKey, by_key.processInstanceKey]

        # The messageId of the buffered message is still known.
        try:
            publish(stub, "durable-buffered", "k-buf", {}, ttl_ms=LONG_TTL_MS, message_id="buf-1")
            raise AssertionError("a duplicate messageId was accepted after the restart")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.ALREADY_EXISTS, f"{e.code()}: {e.details()}"

        # Waiting jobs continue; the locked one is still locked (its deadline is 10 minutes away).
        jobs = activate_until(stub, "durable-work", 4)
        by_instance = {j.processInstanceKey: j for j in jobs}
        assert set(by_instance) == set(job_waiters) - {locked.processInstanceKey}
        assert locked.processInstanceKey not in by_instance, "a job locked before the crash was handed out again"
        assert activate(stub, "durable-work", request_timeout_ms=300) == []
        for job in jobs:
            stub.CompleteJob(pb.CompleteJobRequest(jobKey=job.key, variables='{"done": true}'), timeout=10)
        # The job activated before the crash can still be completed by its worker.
        stub.CompleteJob(pb.CompleteJobRequest(jobKey=locked.key, variables='{"done": true}'), timeout=10)
        for key in job_waiters:
            assert wait_until(lambda: is_finished(stub, key), 10, f"job instance {key} to complete")

        # The message subscription survived: a message now correlates.
        publish(stub, "durable-msg", "k-wait", {"arrived": True})
        after = activate_until(stub, "durable-after", 1)[0]
        assert after.processInstanceKey == msg_waiter
        assert json.loads(after.variables)["arrived"] is True
        stub.CompleteJob(pb.CompleteJobRequest(jobKey=after.key), timeout=10)
        assert wait_until(lambda: is_finished(stub, msg_waiter), 10, "the message instance to complete")

        # The buffered message survived: an instance created now takes it.
        buffered_instance = create(stub, "durable-buffered", {"key": "k-buf"}).processInstanceKey
        taken = activate_until(stub, "durable-buffered-after", 1)[0]
        assert taken.processInstanceKey == buffered_instance
        assert json.loads(taken.variables)["buffered"] == "yes"
        stub.CompleteJob(pb.CompleteJobRequest(jobKey=taken.key), timeout=10)

        # The incident survived: the job is not activatable until retries are given and the incident resolved.
        assert activate(stub, "durable-fail", request_timeout_ms=300) == []
        stub.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=fragile.key, retries=1), timeout=10)
        resolve_incident_near(stub, incident_instance, fence)
        retried = activate_until(stub, "durable-fail", 1)[0]
        assert retried.key == fragile.key and retried.retries == 1
        stub.CompleteJob(pb.CompleteJobRequest(jobKey=retried.key), timeout=10)
        assert wait_until(lambda: is_finished(stub, incident_instance), 10, "the incident instance to complete")
    finally:
        channel.close()
    assert_clean_stop(second)

    # A clean restart after a clean stop also works and sees the same definitions.
    third = new_node(data_dir).start()
    channel, stub = third.stub()
    try:
        assert create(stub, "durable-job").processDefinitionKey == definitions["durable-job"]
    finally:
        channel.close()
    assert_clean_stop(third)
