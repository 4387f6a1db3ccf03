"""pyzeebe 4.x (ZeebeClient, ZeebeWorker, create_insecure_channel) against `waggle dev`.

No `from __future__ import annotations` here: pyzeebe finds the `Job` parameter of a task function by
comparing the annotation object, which string annotations would break.
"""

import asyncio
import contextlib
import time
import uuid

import grpc
import pytest
from pyzeebe import (
    Job,
    JobController,
    ZeebeClient,
    ZeebeWorker,
    create_insecure_channel,
    default_exception_handler,
)
from pyzeebe import errors
from pyzeebe.errors import BusinessError
from pyzeebe.proto import gateway_pb2 as pb

from conftest import BPMN, activate, is_finished, job_for, resolve_incident_near, run_async, wait_until


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@contextlib.asynccontextmanager
async def clients(node):
    channel = create_insecure_channel(grpc_address=node.grpc_addr)
    try:
        yield ZeebeClient(channel), channel
    finally:
        await channel.close()


@contextlib.asynccontextmanager
async def working(worker: ZeebeWorker):
    task = asyncio.create_task(worker.work())
    try:
        yield
    finally:
        await worker.stop()
        await asyncio.wait_for(task, 15)


async def until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def grpc_cause(error: Exception) -> grpc.aio.AioRpcError:
    cause = error.__cause__ if not hasattr(error, "grpc_error") else error.grpc_error
    assert isinstance(cause, grpc.RpcError), f"{error!r} does not carry the gRPC error (cause: {cause!r})"
    return cause


# ---- deploy ---------------------------------------------------------------------------------------------

def test_deploy_resource_reports_process_metadata(node):
    async def scenario():
        async with clients(node) as (client, _):
            response = await client.deploy_resource(BPMN / "py-one-task.bpmn")
            assert response.key > 0
            assert len(response.deployments) == 1
            process = response.deployments[0]
            assert process.bpmn_process_id == "py-one-task"
            assert process.version >= 1
            assert process.process_definition_key > 0
            assert process.resource_name == "py-one-task.bpmn"
            assert process.tenant_id == "<default>"
            assert response.tenant_id == "<default>"

            # Two resources in one call: both are deployed, each with its metadata.
            both = await client.deploy_resource(BPMN / "py-flaky.bpmn", BPMN / "c8js__message-correlation-test.bpmn")
            assert sorted(d.bpmn_process_id for d in both.deployments) == ["message-correlation-test", "py-flaky"]

    run_async(scenario())


def test_redeploying_an_unchanged_resource_keeps_its_version(node):
    # Zeebe deduplicates a resource whose content did not change: same version, same key.
    async def scenario():
        async with clients(node) as (client, _):
            first = (await client.deploy_resource(BPMN / "zbctl-order.bpmn")).deployments[0]
            again = (await client.deploy_resource(BPMN / "zbctl-order.bpmn")).deployments[0]
            assert (again.version, again.process_definition_key) == (first.version, first.process_definition_key)

    run_async(scenario())


def test_invalid_bpmn_is_rejected_naming_resource_and_element(node):
    async def scenario():
        async with clients(node) as (client, _):
            with pytest.raises(errors.ProcessInvalidError) as no_type:
                await client.deploy_resource(BPMN / "no-job-type.bpmn")
            details = grpc_cause(no_type.value).details()
            assert grpc_cause(no_type.value).code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "no-job-type.bpmn" in details and "taskWithoutType" in details, details

            with pytest.raises(errors.ProcessInvalidError) as truncated:
                await client.deploy_resource(BPMN / "c8js__modeller7File.TRUNCATED.bpmn")
            assert "c8js__modeller7File.TRUNCATED.bpmn" in grpc_cause(truncated.value).details()

            # Timers are not executed yet: the deployment names the timer element.
            with pytest.raises(errors.ProcessInvalidError) as timers:
                await client.deploy_resource(BPMN / "zpt__test_timer_events.bpmn")
            details = grpc_cause(timers.value).details()
            assert "TimerEvent_Wait" in details and "timer" in details.lower(), details

            # Atomic: a valid resource deployed together with an invalid one is not deployed either.
            with pytest.raises(errors.ProcessInvalidError):
                await client.deploy_resource(BPMN / "sdk-stream.bpmn", BPMN / "no-job-type.bpmn")
            with pytest.raises(errors.ProcessDefinitionNotFoundError):
                await client.run_process("no-job-type")

    run_async(scenario())


# ---- instances and workers ------------------------------------------------------------------------------

@pytest.mark.parametrize("stream_enabled", [False, True], ids=["polling", "streaming"])
def test_worker_completes_jobs_for_instances_with_and_without_result(node, stream_enabled):
    async def scenario():
        async with clients(node) as (client, channel):
            await client.deploy_resource(BPMN / "py-one-task.bpmn")
            worker = ZeebeWorker(channel, name="py-worker", request_timeout=2000, stream_enabled=stream_enabled)
            seen = []

            @worker.task(task_type="py-double")
            async def double(value: int, job: Job) -> dict:
                seen.append((job.key, job.bpmn_process_id, job.element_id, dict(job.custom_headers), job.retries))
                return {"doubled": value * 2}

            async with working(worker):
                result = await client.run_process_with_result("py-one-task", {"amount": 21}, timeout=15_000)
                assert result.bpmn_process_id == "py-one-task"
                assert result.process_instance_key > 0
                assert result.variables["result"] == 42
                assert result.variables["amount"] == 21
                # With an output mapping, the job's variables stay local to the task.
                assert "doubled" not in result.variables and "value" not in result.variables

                fetched = await client.run_process_with_result(
                    "py-one-task", {"amount": 5, "other": "x"}, timeout=15_000, variables_to_fetch=["result"])
                assert fetched.variables == {"result": 10}

                started = [await client.run_process("py-one-task", {"amount": i}) for i in range(5)]
                assert len({s.process_instance_key for s in started}) == 5
                assert all(s.bpmn_process_id == "py-one-task" and s.version >= 1 for s in started)
                await until(lambda: len(seen) >= 7, 15, "the worker to complete 7 jobs")

            key, process_id, element_id, headers, retries = seen[0]
            assert (process_id, element_id, headers, retries) == ("py-one-task", "double", {"factor": "2"}, 3)

        _, stub = node.stub()
        for s in started:
            assert wait_until(lambda: is_finished(stub, s.process_instance_key), 10, "the instance to complete")

    run_async(scenario())


def test_instance_with_result_times_out_with_process_timeout_error(node):
    async def scenario():
        async with clients(node) as (client, _):
            await client.deploy_resource(BPMN / "c8js__message-correlation-test.bpmn")
            began = time.monotonic()
            with pytest.raises(errors.ProcessTimeoutError):
                await client.run_process_with_result("message-correlation-test", {"orderId": unique("never")}, timeout=500)
            assert time.monotonic() - began < 10

    run_async(scenario())


def test_order_flow_runs_every_supported_element_kind(node):
    async def scenario():
        async with clients(node) as (client, channel):
            await client.deploy_resource(BPMN / "py-order-flow.bpmn")
            worker = ZeebeWorker(channel, name="flow-worker", request_timeout=1000)
            done = []

            @worker.task(task_type="flow-notify")
            async def notify(job: Job) -> dict:
                done.append(("notify", job.process_instance_key))
                return {"notified": True}

            @worker.task(task_type="flow-approve")
            async def approve(amount: int) -> dict:
                done.append(("approve", amount))
                return {"approved": amount > 100}

            @worker.task(task_type="io.camunda.zeebe:userTask")
            async def review(job: Job) -> dict:
                done.append(("review", job.element_id))
                return {"reviewed": True}

            @worker.task(task_type="flow-pack")
            async def pack(job: Job) -> dict:
                done.append(("pack", job.element_id))
                return {"packed": True}

            async with working(worker):
                small_id, big_id = unique("small"), unique("big")
                small = asyncio.create_task(
                    client.run_process_with_result("py-order-flow", {"amount": 50, "orderId": small_id}, timeout=20_000))
                big = asyncio.create_task(
                    client.run_process_with_result("py-order-flow", {"amount": 500, "orderId": big_id}, timeout=20_000))
                # The receive tasks wait for goods-arrived; publish (without buffering) until each instance took it.
                deadline = time.monotonic() + 20
                while not (small.done() and big.done()) and time.monotonic() < deadline:
                    for order_id, task in ((small_id, small), (big_id, big)):
                        if not task.done():
                            await client.publish_message("goods-arrived", order_id, {"goods": order_id},
                                                         time_to_live_in_milliseconds=0)
                    await asyncio.sleep(0.2)
                small_result, big_result = await small, await big

            assert small_result.variables["doubled"] == 100
            assert "approved" not in small_result.variables
            assert big_result.variables["approved"] is True
            assert "doubled" not in big_result.variables
            for result, order_id in ((small_result, small_id), (big_result, big_id)):
                v = result.variables
                assert (v["notified"], v["reviewed"], v["packed"], v["goods"]) == (True, True, True, order_id)
            kinds = sorted(k for k, _ in done)
            assert kinds == sorted(["notify", "notify", "approve", "review", "review", "pack", "pack"]), done
            assert ("review", "review") in done and ("pack", "pack") in done

    run_async(scenario())


# ---- messages -------------------------------------------------------------------------------------------

def test_published_message_correlates_to_waiting_instance_by_key(node):
    async def scenario():
        async with clients(node) as (client, _):
            await client.deploy_resource(BPMN / "c8js__message-correlation-test.bpmn")
            order, other = unique("order"), unique("other")
            bystander = await client.run_process("message-correlation-test", {"orderId": other})
            waiting = asyncio.create_task(
                client.run_process_with_result("message-correlation-test", {"orderId": order}, timeout=15_000))
            deadline = time.monotonic() + 15
            while not waiting.done() and time.monotonic() < deadline:
                response = await client.publish_message("MESSAGE_CORRELATION_TEST_CATCH", order, {"paid": 12.5},
                                                        time_to_live_in_milliseconds=0)
                assert response.key > 0
                await asyncio.sleep(0.1)
            result = await waiting
            assert result.variables == {"orderId": order, "paid": 12.5}
            # The instance with another correlation key is still waiting: cancelling it succeeds.
            await client.cancel_process_instance(bystander.process_instance_key)

    run_async(scenario())


def test_buffered_message_correlates_to_instance_created_later(node):
    async def scenario():
        async with clients(node) as (client, _):
            await client.deploy_resource(BPMN / "c8js__message-correlation-test.bpmn")
            order = unique("early")
            await client.publish_message("MESSAGE_CORRELATION_TEST_CATCH", order, {"early": True},
                                         time_to_live_in_milliseconds=60_000)
            result = await client.run_process_with_result("message-correlation-test", {"orderId": order}, timeout=10_000)
            assert result.variables["early"] is True
            # A buffered message correlates once per process definition: a second instance keeps waiting.
            with pytest.raises(errors.ProcessTimeoutError):
                await client.run_process_with_result("message-correlation-test", {"orderId": order}, timeout=500)

    run_async(scenario())


def test_message_start_event_starts_an_instance(node):
    async def scenario():
        async with clients(node) as (client, _):
            await client.deploy_resource(BPMN / "pyzeebe__test.bpmn")
            marker = unique("start")
            await client.publish_message("start_test_process", unique("any"), {"input": marker})
            _, stub = node.stub()
            job = job_for(stub, "test", predicate=lambda j: marker in j.variables)
            assert job.bpmnProcessId == "test" and job.elementId == "test-task"
            stub.CompleteJob(pb.CompleteJobRequest(jobKey=job.key, variables='{"output": 1}'), timeout=10)
            assert wait_until(lambda: is_finished(stub, job.processInstanceKey), 10, "the started instance to end")

    run_async(scenario())


def test_duplicate_message_id_is_already_exists(node):
    async def scenario():
        async with clients(node) as (client, _):
            message_id, key = unique("msg"), unique("key")
            await client.publish_message("dedup", key, {}, time_to_live_in_milliseconds=60_000, message_id=message_id)
            with pytest.raises(errors.MessageAlreadyExistsError) as duplicate:
                await client.publish_message("dedup", key, {}, time_to_live_in_milliseconds=60_000, message_id=message_id)
            assert grpc_cause(duplicate.value).code() == grpc.StatusCode.ALREADY_EXISTS
            # The same id under another correlation key, or a fresh id, is a different message.
            await client.publish_message("dedup", unique("key"), {}, time_to_live_in_milliseconds=60_000, message_id=message_id)
            await client.publish_message("dedup", key, {}, time_to_live_in_milliseconds=60_000, message_id=unique("msg"))

    run_async(scenario())


# ---- cancel and errors ----------------------------------------------------------------------------------

def test_cancel_instance_then_cancel_again_is_not_found(node):
    async def scenario():
        async with clients(node) as (client, _):
            await client.deploy_resource(BPMN / "c8js__message-correlation-test.bpmn")
            instance = await client.run_process("message-correlation-test", {"orderId": unique("cancel")})
            await client.cancel_process_instance(instance.process_instance_key)
            with pytest.raises(errors.ProcessInstanceNotFoundError):
                await client.cancel_process_instance(instance.process_instance_key)

    run_async(scenario())


def test_unknown_ids_and_keys_raise_pyzeebe_errors(node):
    async def scenario():
        async with clients(node) as (client, channel):
            with pytest.raises(errors.ProcessDefinitionNotFoundError):
                await client.run_process("no-such-process")
            with pytest.raises(errors.ProcessDefinitionNotFoundError):
                await client.run_process_with_result("no-such-process", timeout=1000)
            await client.deploy_resource(BPMN / "py-one-task.bpmn")
            with pytest.raises(errors.ProcessDefinitionNotFoundError):
                await client.run_process("py-one-task", version=999)
            with pytest.raises(errors.ProcessInstanceNotFoundError):
                await client.cancel_process_instance(2251799813685249 + 10**9)
            # Job calls through the worker-side adapter.
            adapter = ZeebeWorker(channel).zeebe_adapter
            with pytest.raises(errors.JobNotFoundError):
                await adapter.complete_job(job_key=2251799813685249 + 10**9, variables={})
            with pytest.raises(errors.JobNotFoundError):
                await adapter.fail_job(job_key=2251799813685249 + 10**9, retries=1, message="x", retry_back_off_ms=0,
                                       variables={})
            with pytest.raises(errors.JobNotFoundError):
                await adapter.throw_error(job_key=2251799813685249 + 10**9, message="x", variables={}, error_code="E")
            # The node still serves.
            topology = await client.topology()
            assert topology.cluster_size == 1 and topology.partitions_count == 1

    run_async(scenario())


# ---- failures, retries, incidents, BPMN errors ----------------------------------------------------------

def test_failing_worker_uses_retries_then_raises_incident_that_can_be_resolved(node):
    async def scenario():
        _, stub = node.stub()
        async with clients(node) as (client, channel):
            await client.deploy_resource(BPMN / "py-flaky.bpmn")
            attempts, failed = [], []

            async def record_failure(e: Exception, job: Job, controller: JobController) -> None:
                await default_exception_handler(e, job, controller)  # FailJob with retries - 1
                failed.append((job.key, job.retries))

            worker = ZeebeWorker(channel, name="flaky-worker", request_timeout=1000)

            @worker.task(task_type="py-flaky", exception_handler=record_failure)
            async def flaky(job: Job) -> dict:
                attempts.append(job.key)
                raise RuntimeError("the payment service is down")

            instance = await client.run_process("py-flaky")
            async with working(worker):
                await until(lambda: len(failed) >= 2, 15, "two failed attempts")
                # No third attempt: the job has no retries left.
                await asyncio.sleep(0.5)
            assert len(attempts) == 2 and len(set(attempts)) == 1, attempts
            assert [r for _, r in failed] == [2, 1]
            job_key = attempts[0]

            assert activate(stub, "py-flaky", request_timeout_ms=300) == [], "a job with 0 retries must not activate"
            upper = (await client.publish_message("py-flaky-fence", unique("fence"), time_to_live_in_milliseconds=0)).key

            stub.UpdateJobRetries(pb.UpdateJobRetriesRequest(jobKey=job_key, retries=1), timeout=10)
            resolve_incident_near(stub, instance.process_instance_key, upper)
            job = job_for(stub, "py-flaky", instance.process_instance_key)
            assert job.key == job_key and job.retries == 1
            stub.CompleteJob(pb.CompleteJobRequest(jobKey=job_key, variables="{}"), timeout=10)
            assert wait_until(lambda: is_finished(stub, instance.process_instance_key), 10, "the instance to complete")

    run_async(scenario())


def test_fail_job_with_retries_and_backoff_reactivates_later(node):
    async def scenario():
        _, stub = node.stub()
        async with clients(node) as (client, channel):
            await client.deploy_resource(BPMN / "py-flaky.bpmn")
            instance = await client.run_process("py-flaky")
            job = job_for(stub, "py-flaky", instance.process_instance_key)
            adapter = ZeebeWorker(channel).zeebe_adapter
            failed_at = time.monotonic()
            await adapter.fail_job(job_key=job.key, retries=1, message="try later", retry_back_off_ms=1500,
                                   variables={"attempt": 1})
            assert activate(stub, "py-flaky", request_timeout_ms=300) == [], "the back-off must delay reactivation"
            again = job_for(stub, "py-flaky", instance.process_instance_key)
            assert again.key == job.key and again.retries == 1
            assert time.monotonic() - failed_at >= 1.4
            await adapter.complete_job(job_key=job.key, variables={})
            # Completing a job twice: the second attempt finds no such job.
            with pytest.raises(errors.JobNotFoundError):
                await adapter.complete_job(job_key=job.key, variables={})

    run_async(scenario())


def test_business_error_is_caught_by_boundary_event_or_raises_incident(node):
    async def scenario():
        _, stub = node.stub()
        async with clients(node) as (client, channel):
            await client.deploy_resource(BPMN / "c8js__Client-ThrowError.bpmn")
            worker = ZeebeWorker(channel, name="error-worker", request_timeout=1000)
            sad, thrown = [], []

            async def record_throw(e: Exception, job: Job, controller: JobController) -> None:
                await default_exception_handler(e, job, controller)  # ThrowError with the BusinessError's code
                thrown.append((job.process_instance_key, getattr(e, "error_code", None)))

            @worker.task(task_type="throw-bpmn-error-task", exception_handler=record_throw)
            async def throw(code: str) -> dict:
                raise BusinessError(code)

            @worker.task(task_type="sad-flow")
            async def sad_flow(job: Job) -> dict:
                sad.append(job.process_instance_key)
                return {"handled": True}

            async with working(worker):
                caught = await client.run_process_with_result("throw-bpmn-error", {"code": "BUSINESS_ERROR"}, timeout=15_000)
                assert caught.variables["handled"] is True
                assert sad == [caught.process_instance_key]

                # An error code nothing catches raises an incident; the instance stays active.
                uncaught = await client.run_process("throw-bpmn-error", {"code": "NOBODY_CATCHES_THIS"})
                await until(lambda: (uncaught.process_instance_key, "NOBODY_CATCHES_THIS") in thrown, 15,
                            "the worker to throw the uncaught error")
            assert sad == [caught.process_instance_key]
            assert activate(stub, "throw-bpmn-error-task", request_timeout_ms=300) == []
            # The incident was raised between the instance's creation and this fence: resolving it succeeds.
            upper = (await client.publish_message("fence", unique("fence"), time_to_live_in_milliseconds=0)).key
            resolve_incident_near(stub, uncaught.process_instance_key, upper)
            await client.cancel_process_instance(uncaught.process_instance_key)

    run_async(scenario())
