"""@camunda8/sdk 8.8 (gRPC client, polling and streaming workers) against `waggle dev`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import HERE, is_finished, wait_until


def run_sdk(node, instances: int = 5, identity_encoding: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    node_bin = shutil.which("node")
    if node_bin is None:
        pytest.fail("node is not installed")
    if not (HERE / "node_modules" / "@camunda8" / "sdk").is_dir():
        pytest.fail("@camunda8/sdk not installed; run scripts/setup.sh")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "ZEEBE_GRPC_ADDRESS": f"grpc://{node.grpc_addr}",
        "CAMUNDA_OAUTH_STRATEGY": "NONE",
        "CAMUNDA_LOG_LEVEL": "error",
        "ZEEBE_CLIENT_LOG_LEVEL": "NONE",
        "SDK_INSTANCES": str(instances),
        "SDK_DEADLINE_MS": "30000",
        "SDK_IDENTITY_ENCODING": "1" if identity_encoding else "0",
    }
    proc = subprocess.run([node_bin, str(HERE / "sdk_worker.mjs")], cwd=HERE, env=env,
                          capture_output=True, text=True, timeout=90)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert lines, f"sdk_worker.mjs printed no summary (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc, json.loads(lines[-1][len("SUMMARY "):])


def test_camunda8_sdk_grpc_workers_complete_jobs(node):
    """The SDK as users run it: it sends every request gzip-compressed."""
    check_sdk_run(node, *run_sdk(node, instances=5))


def test_camunda8_sdk_grpc_workers_complete_jobs_with_uncompressed_requests(node):
    """The same flow with request compression switched off in the client, which separates the SDK's
    other expectations from gzip support."""
    check_sdk_run(node, *run_sdk(node, instances=5, identity_encoding=True))


def check_sdk_run(node, proc, summary):
    assert summary["errors"] == [], f"failed at step {summary['step']}:\n" + "\n".join(summary["errors"])[:3000]
    assert proc.returncode == 0, proc.stderr[-3000:]

    assert summary["topology"]["clusterSize"] == 1
    assert summary["topology"]["partitionsCount"] == 1
    assert summary["topology"]["roles"] == ["1:LEADER:HEALTHY"]

    assert [d["bpmnProcessId"] for d in summary["deployed"]] == ["hello-world-complete", "sdk-stream"]
    assert all(int(d["processDefinitionKey"]) > 0 and int(d["version"]) >= 1 for d in summary["deployed"])

    created, completed = summary["created"], summary["completed"]
    assert len(set(created["hello"])) == 5 and len(set(created["stream"])) == 5
    assert sorted(completed["hello"]) == sorted(created["hello"]), "the polling worker missed jobs"
    assert sorted(completed["stream"]) == sorted(created["stream"]), "the streaming worker missed jobs"
    assert summary["headers"] == {"message": "Hello World"}

    result = summary["withResult"]
    assert result["variables"]["completedBy"] == "sdk-polling"
    assert result["variables"]["n"] == "result"

    _, stub = node.stub()
    for key in created["hello"] + created["stream"]:
        assert wait_until(lambda: is_finished(stub, int(key)), 10, f"instance {key} to complete")
