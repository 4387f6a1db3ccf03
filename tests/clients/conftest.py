"""Fixtures that run a real `waggle dev` node for the client compatibility tests.

A node gets three free loopback ports and a temporary data directory, is waited for through its
readiness probe (polling with a deadline), and is stopped with SIGTERM; a node that does not exit 0
within a few seconds fails the test that owned it, because clean shutdown is part of the contract.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from pyzeebe.proto import gateway_pb2 as pb
from pyzeebe.proto.gateway_pb2_grpc import GatewayStub

HERE = Path(__file__).resolve().parent
BPMN = HERE / "bpmn"
ROOT = HERE.parent.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "waggle-target"))
WAGGLE_BIN = Path(os.environ.get("WAGGLE_BIN", TARGET_DIR / "release" / "waggle"))
ZBCTL = HERE / "node_modules" / "zbctl" / "bin" / "zbctl-cli.linux"

READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns a truthy value, which is returned; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - the last error is reported on timeout
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


class PortTaken(Exception):
    pass


# Nodes started during the current test, so that a failing test reports their logs.
LIVE_NODES: list["WaggleNode"] = []


class WaggleNode:
    """One `waggle dev` process on free ports. Its stderr/stdout go to a log file shown on failure."""

    def __init__(self, data_dir: Path, log_dir: Path):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> "WaggleNode":
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        # A free port can be taken by another process between probing and binding; such a start is
        # retried on new ports. Any other early exit fails at once.
        for attempt in range(3):
            self._spawn()
            try:
                self.wait_ready()
                return self
            except PortTaken:
                if attempt == 2:
                    raise AssertionError(f"waggle could not bind its ports three times:\n{self.log_tail()}")
        return self

    def _spawn(self):
        # Fresh ports on every start: a restart must not depend on the old sockets being released.
        self.grpc_port, self.mgmt_port, self.command_port = free_port(), free_port(), free_port()
        self.starts += 1
        self.log_path = self.log_dir / f"waggle-{self.starts}.log"
        log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("WAGGLE_LOG", "info,openraft=warn")
        self.proc = subprocess.Popen(
            [
                str(WAGGLE_BIN), "dev",
                "--data-dir", str(self.data_dir),
                "--grpc-addr", self.grpc_addr,
                "--management-addr", f"127.0.0.1:{self.mgmt_port}",
                "--command-addr", f"127.0.0.1:{self.command_port}",
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
        log.close()
        LIVE_NODES.append(self)

    @property
    def grpc_addr(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def mgmt_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            if "address already in use" in self.log_tail().lower():
                raise PortTaken()
            raise AssertionError(f"waggle exited with {self.proc.returncode} before it was ready:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.mgmt_url}/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def wait_ready(self):
        deadline = time.monotonic() + READY_DEADLINE_S
        while time.monotonic() < deadline:
            if self.ready():
                return
            time.sleep(0.05)
        self.kill9()
        raise AssertionError(f"waggle was not ready within {READY_DEADLINE_S}s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_DEADLINE_S)

    def stub(self) -> tuple[grpc.Channel, GatewayStub]:
        channel = grpc.insecure_channel(
            self.grpc_addr,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        return channel, GatewayStub(channel)


def assert_clean_stop(node: WaggleNode):
    code = node.stop()
    assert code == 0, f"waggle did not stop cleanly on SIGTERM within {STOP_DEADLINE_S}s (exit {code}):\n{node.log_tail()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for n in dict.fromkeys(LIVE_NODES):
            report.sections.append((f"waggle log {n.log_path}", n.log_tail(60)))
    if report.when == "teardown":
        LIVE_NODES[:] = [n for n in LIVE_NODES if n.proc is not None and n.proc.poll() is None]


@pytest.fixture(scope="session")
def waggle_bin() -> Path:
    if not WAGGLE_BIN.is_file():
        pytest.exit(f"waggle binary not found at {WAGGLE_BIN}; build it (tests/clients/run.sh does) or set WAGGLE_BIN", 2)
    return WAGGLE_BIN


@pytest.fixture(scope="session")
def node(waggle_bin, tmp_path_factory):
    """A node shared by the tests that only add their own processes and job types to it."""
    base = tmp_path_factory.mktemp("shared-node")
    n = WaggleNode(base / "data", base).start()
    yield n
    assert_clean_stop(n)


@pytest.fixture
def new_node(waggle_bin, tmp_path):
    """A factory of private nodes (for restarts); every node it made is stopped and checked at the end."""
    made: list[WaggleNode] = []

    def make(data_dir: Path | None = None) -> WaggleNode:
        n = WaggleNode(data_dir or tmp_path / f"data-{len(made)}", tmp_path)
        made.append(n)
        return n

    yield make
    for n in made:
        if n.proc is not None and n.proc.poll() is None:
            assert_clean_stop(n)


@pytest.fixture
def gateway(node):
    """A blocking gateway stub (the generated one pyzeebe ships) on the shared node."""
    channel, stub = node.stub()
    yield stub
    channel.close()


def run_async(coro):
    """pyzeebe is asyncio-only; each test runs its scenario on a fresh event loop."""
    return asyncio.run(coro)


# ---- plain gRPC helpers shared by the tests -------------------------------------------------------------

def activate(stub: GatewayStub, job_type: str, max_jobs: int = 32, timeout_ms: int = 30_000,
             request_timeout_ms: int = 0, worker: str = "pytest") -> list:
    """ActivateJobs and collect every job of the response stream."""
    jobs = []
    request = pb.ActivateJobsRequest(type=job_type, worker=worker, timeout=timeout_ms,
                                     maxJobsToActivate=max_jobs, requestTimeout=request_timeout_ms)
    grpc_deadline = (request_timeout_ms / 1000 if request_timeout_ms > 0 else 10) + 10
    for response in stub.ActivateJobs(request, timeout=grpc_deadline):
        jobs.extend(response.jobs)
    return jobs


def activate_until(stub: GatewayStub, job_type: str, count: int, timeout_s: float = 15.0, **kw) -> list:
    """Activates jobs of a type until `count` have arrived (long polls with a deadline)."""
    jobs: list = []
    deadline = time.monotonic() + timeout_s
    while len(jobs) < count and time.monotonic() < deadline:
        remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
        jobs += activate(stub, job_type, max_jobs=count - len(jobs), request_timeout_ms=min(remaining_ms, 2000), **kw)
    assert len(jobs) >= count, f"only {len(jobs)} of {count} jobs of type {job_type!r} arrived within {timeout_s}s"
    return jobs


def deploy(stub: GatewayStub, *names: str) -> pb.DeployResourceResponse:
    resources = [pb.Resource(name=n, content=(BPMN / n).read_bytes()) for n in names]
    return stub.DeployResource(pb.DeployResourceRequest(resources=resources), timeout=10)


def create(stub: GatewayStub, process_id: str, variables: dict | None = None) -> pb.CreateProcessInstanceResponse:
    return stub.CreateProcessInstance(
        pb.CreateProcessInstanceRequest(bpmnProcessId=process_id, version=-1, variables=json.dumps(variables or {})),
        timeout=10,
    )


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    """Runs a unary call that must fail and returns its error."""
    try:
        result = call(*args, timeout=kwargs.pop("timeout", 10), **kwargs)
    except grpc.RpcError as e:
        return e
    raise AssertionError(f"expected the call to fail, but it answered {result!r}")


def is_finished(stub: GatewayStub, instance_key: int) -> bool:
    """Whether an instance is no longer active, without disturbing it: SetVariables with an empty object
    on the instance's scope succeeds while it is active and answers NOT_FOUND once it has ended."""
    try:
        stub.SetVariables(pb.SetVariablesRequest(elementInstanceKey=instance_key, variables="{}"), timeout=10)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return True
        raise
    return False


def job_for(stub: GatewayStub, job_type: str, instance_key: int | None = None, predicate=None,
            timeout_s: float = 15.0, timeout_ms: int = 30_000):
    """Activates jobs of a type until one of the given instance (or matching `predicate`) arrives. Jobs of
    other instances that come along are handed back at once (FailJob with unchanged retries), so a test
    never keeps another test's job locked."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        remaining_ms = max(100, int((deadline - time.monotonic()) * 1000))
        for job in activate(stub, job_type, max_jobs=8, timeout_ms=timeout_ms, request_timeout_ms=min(remaining_ms, 2000)):
            if (instance_key is None or job.processInstanceKey == instance_key) and (predicate is None or predicate(job)):
                found = job
                break
            stub.FailJob(pb.FailJobRequest(jobKey=job.key, retries=job.retries, errorMessage="not this test's job"),
                         timeout=10)
        else:
            continue
        return found
    raise AssertionError(f"no job of type {job_type!r} for instance {instance_key} arrived within {timeout_s}s")


def resolve_incident_near(stub: GatewayStub, after_key: int, before_key: int) -> int:
    """Zeebe's gRPC API never tells a client an incident's key (Operate and the exporters do). Keys of a
    partition are sequential, so the incident raised between two known keys is found by trying
    ResolveIncident on each key in between: every other key must answer NOT_FOUND, exactly one succeeds.
    Returns the incident key."""
    assert before_key - after_key < 2000, f"key range too wide to probe: {after_key}..{before_key}"
    resolved = []
    for key in range(after_key + 1, before_key):
        try:
            stub.ResolveIncident(pb.ResolveIncidentRequest(incidentKey=key), timeout=10)
            resolved.append(key)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, (
                f"ResolveIncident({key}) on a key that is not an incident answered {e.code()}: {e.details()}")
    assert len(resolved) == 1, f"expected exactly one incident between keys {after_key} and {before_key}, resolved {resolved}"
    return resolved[0]
