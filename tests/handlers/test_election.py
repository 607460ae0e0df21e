"""Leader election over a coordination.k8s.io Lease: one leader at a time, hand-over on release or expiry,
409 Conflict for the loser of a race, and a deposed leader that stops acting at once.

kmock alone stores `metadata.resourceVersion` as the client sent it, so it would let two candidates both "win"
the same Lease; conftest.Emulator adds the API server's optimistic concurrency: every write gets a new
resourceVersion, and a replace that carries an older one is refused with 409 Conflict.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kmock as kmocklib
import kubernetes.client
import pytest
from kubernetes.client.exceptions import ApiException

from pgbackup.handlers.election import LeaseConfig, LeaseElection
from tests.handlers.conftest import NAMESPACE, Cluster, eventually, policy_spec
from tests.handlers.rbac_check import denied_requests
from tests.handlers.test_main import free_port, write_kubeconfig

pytestmark = pytest.mark.timeout(60)

LEASE = "pgbackup-operator-leader"
class Clock:
    """A monotonic clock the test moves forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """The real CoordinationV1Api, with a hook after the next read (to interleave two candidates) and a log of
    the HTTP status of refused replaces."""

    def __init__(self, api: kubernetes.client.CoordinationV1Api) -> None:
        self.api = api
        self.after_next_read: Callable[[], None] | None = None
        self.refused: list[int] = []

    def read_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        response = self.api.read_namespaced_lease(*args, **kwargs)
        hook, self.after_next_read = self.after_next_read, None
        if hook is not None:
            hook()
        return response

    def replace_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.api.replace_namespaced_lease(*args, **kwargs)
        except ApiException as error:
            self.refused.append(error.status)
            raise

    def create_namespaced_lease(self, *args: Any, **kwargs: Any) -> Any:
        return self.api.create_namespaced_lease(*args, **kwargs)


def config(identity: str, **timings: Any) -> LeaseConfig:
    return LeaseConfig(namespace=NAMESPACE, identity=identity,
                       **{"lease_duration": 15, "renew_deadline": 10, "retry_period": 0.05, **timings})


def candidate(identity: str, **timings: Any) -> LeaseElection:
    return LeaseElection(config(identity, **timings))


def leases(cluster: Cluster) -> kubernetes.client.CoordinationV1Api:
    return kubernetes.client.CoordinationV1Api(cluster.core.api_client)


def lease(cluster: Cluster) -> dict[str, Any]:
    response = leases(cluster).read_namespaced_lease(LEASE, NAMESPACE, _preload_content=False)
    data: dict[str, Any] = json.loads(response.data)
    return data


def holder(cluster: Cluster) -> str | None:
    spec: dict[str, Any] = lease(cluster)["spec"]
    return spec.get("holderIdentity")


def take_over(cluster: Cluster, identity: str) -> bool:
    """Write the Lease as another replica that has just acquired it (with the resourceVersion precondition)."""
    current = lease(cluster)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    current["spec"].update(holderIdentity=identity, acquireTime=now, renewTime=now)
    leases(cluster).replace_namespaced_lease(LEASE, NAMESPACE, current, _preload_content=False)
    return True


async def test_only_one_replica_leads_and_the_lease_is_handed_over(cluster: Cluster, emulator: Any) -> None:
    first, second = candidate("replica-a"), candidate("replica-b")
    assert await asyncio.to_thread(first.try_acquire_or_renew)
    assert not await asyncio.to_thread(second.try_acquire_or_renew)
    assert await asyncio.to_thread(first.try_acquire_or_renew)  # renewing
    assert await asyncio.to_thread(holder, cluster) == "replica-a"

    await asyncio.to_thread(first.release)
    assert await asyncio.to_thread(second.try_acquire_or_renew)
    assert not await asyncio.to_thread(first.try_acquire_or_renew)
    assert await asyncio.to_thread(holder, cluster) == "replica-b"
    assert not denied_requests([r for r in list(emulator) if r.headers.get("User-Agent") == "pgbackup-operator"])


async def test_a_lease_is_taken_over_only_when_the_candidate_saw_it_unrenewed_for_the_lease_duration(
        cluster: Cluster) -> None:
    # The holder's clock runs a minute behind: its renewTime looks stale to the others, yet it still renews.
    first = candidate("replica-a")
    assert await asyncio.to_thread(first.try_acquire_or_renew)
    stale = (datetime.now(UTC) - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await asyncio.to_thread(leases(cluster).patch_namespaced_lease, LEASE, NAMESPACE,
                            {"spec": {"renewTime": stale}}, _content_type="application/merge-patch+json",
                            _preload_content=False)
    clock = Clock()
    second = LeaseElection(config("replica-b"), clock=clock)
    assert not await asyncio.to_thread(second.try_acquire_or_renew)
    clock.now += 14.9
    assert not await asyncio.to_thread(second.try_acquire_or_renew)
    assert await asyncio.to_thread(holder, cluster) == "replica-a"

    clock.now += 0.2  # nobody renewed it for 15.1 s of replica-b's own time
    assert await asyncio.to_thread(second.try_acquire_or_renew)
    spec = (await asyncio.to_thread(lease, cluster))["spec"]
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1


async def test_of_two_candidates_racing_for_the_lease_the_loser_gets_409_and_does_not_lead(
        cluster: Cluster) -> None:
    old = candidate("replica-a")
    assert await asyncio.to_thread(old.try_acquire_or_renew)
    await asyncio.to_thread(old.release)  # free for the taking by whoever writes first

    winner = candidate("replica-c")
    racing = Leases(leases(cluster))
    loser = LeaseElection(config("replica-b"), api=racing)  # the real API, wrapped
    won: list[bool] = []
    racing.after_next_read = lambda: won.append(winner.try_acquire_or_renew())  # writes between b's read and write

    assert not await asyncio.to_thread(loser.try_acquire_or_renew)
    assert won == [True]
    assert racing.refused == [409]
    assert await asyncio.to_thread(holder, cluster) == "replica-c"
    assert not await asyncio.to_thread(loser.try_acquire_or_renew)  # and it stays a follower
    stop = threading.Event()
    stop.set()
    assert not await asyncio.to_thread(loser.wait_until_leader, stop)


async def test_a_leader_that_sees_another_holder_reports_the_loss_at_once(cluster: Cluster) -> None:
    leader = candidate("replica-a")
    assert await asyncio.to_thread(leader.try_acquire_or_renew)
    await asyncio.to_thread(take_over, cluster, "replica-b")  # e.g. after this replica was paused for too long
    reasons: list[str] = []
    stop = threading.Event()
    await asyncio.wait_for(asyncio.to_thread(leader.keep_leading, stop, reasons.append), timeout=30)
    assert len(reasons) == 1 and "held by replica-b" in reasons[0], reasons
    assert await asyncio.to_thread(holder, cluster) == "replica-b"


@pytest.fixture()
def blackhole() -> Iterator[str]:
    """An address that accepts connections and never answers, like an API server behind a broken network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_leader_cut_off_from_the_api_gives_up_before_a_follower_takes_over(
        cluster: Cluster, blackhole: str) -> None:
    timings = {"lease_duration": 4, "renew_deadline": 2, "retry_period": 0.2}
    leader = candidate("replica-a", **timings)
    follower = candidate("replica-b", **timings)
    assert await asyncio.to_thread(leader.try_acquire_or_renew)
    assert not await asyncio.to_thread(follower.try_acquire_or_renew)

    leader.api.api_client.configuration.host = blackhole  # the leader's requests now hang
    happened: list[str] = []
    stop = threading.Event()
    leading = asyncio.to_thread(leader.keep_leading, stop, lambda reason: happened.append(f"a lost: {reason}"))
    following = asyncio.to_thread(lambda: happened.append(f"b leads: {follower.wait_until_leader(stop)}"))
    try:
        await asyncio.wait_for(asyncio.gather(leading, following), timeout=30)
    finally:
        stop.set()
    assert len(happened) == 2 and happened[1] == "b leads: True", happened
    assert "not renewed within the renew deadline of 2 s" in happened[0], happened
    assert await asyncio.to_thread(holder, cluster) == "replica-b"


def test_timings_that_allow_two_leaders_are_refused() -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        LeaseConfig(namespace=NAMESPACE, identity="replica-a", lease_duration=15, renew_deadline=15)


async def test_wait_until_leader_returns_false_when_stopped(cluster: Cluster) -> None:
    leader, waiting = candidate("replica-a"), candidate("replica-b")
    assert await asyncio.to_thread(leader.try_acquire_or_renew)
    stop = threading.Event()
    task = asyncio.create_task(asyncio.to_thread(waiting.wait_until_leader, stop))
    await asyncio.sleep(0.2)
    assert not task.done()
    stop.set()
    assert await asyncio.wait_for(task, timeout=5) is False


@asynccontextmanager
async def operator_process(emulator: Any, tmp_path: Path, identity: str) -> AsyncIterator[tuple[Any, Path]]:
    """`pgbackup-operator` as a pod would run it (POD_NAMESPACE/POD_NAME set: leader election on); its output goes
    to a file, shown when the test fails. Killed if still running at the end."""
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(kubeconfig, str(emulator.url).rstrip("/"))
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "KUBECONFIG": str(kubeconfig),
           "LOG_FORMAT": "json", "PGBACKUP_IMAGE": "registry.example/pgbackup:1.2.3",
           "POD_NAMESPACE": NAMESPACE, "POD_NAME": identity, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "operator.log"
    with log.open("w") as sink:
        process = subprocess.Popen([str(Path(sys.executable).parent / "pgbackup-operator"),
                                    f"--liveness=http://127.0.0.1:{free_port()}/healthz"],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        yield process, log
    except (AssertionError, subprocess.TimeoutExpired) as error:
        raise AssertionError(f"{error}\noperator output:\n{log.read_text()[-5000:]}") from None
    finally:
        if process.poll() is None:
            process.kill()
            await asyncio.to_thread(process.wait, timeout=20)


async def test_a_deposed_operator_exits_at_once_even_while_a_handler_blocks(
        cluster: Cluster, secrets: None, emulator: Any, tmp_path: Path) -> None:
    # The policy handler reads its Secret; that request never gets an answer, so the handler blocks in its
    # thread, as a handler waiting on a slow API or a quiesce would. A graceful shutdown would wait for it.
    unblock = asyncio.Event()

    async def hang(_: Any) -> Any:
        await unblock.wait()
        raise kmocklib.KubernetesError(status=503, reason="ServiceUnavailable", message="test over")

    emulator[f"get /api/v1/namespaces/{NAMESPACE}/secrets/db-creds"] << hang
    try:
        async with operator_process(emulator, tmp_path, "replica-a") as (process, log):
            assert await eventually(lambda: holder(cluster) == "replica-a", what="replica-a leading")
            await asyncio.to_thread(cluster.create_policy, "orders", policy_spec())
            assert await eventually(lambda: [r for r in list(emulator) if r.method == kmocklib.method.GET
                                             and r.url.path.endswith("/secrets/db-creds")], what="the handler blocked")
            await eventually(lambda: take_over(cluster, "replica-b"), what="replica-b taking the Lease")
            await asyncio.to_thread(process.wait, timeout=30)
    finally:
        unblock.set()
    output = log.read_text()
    assert process.returncode == 1, output
    lost = [line for line in output.splitlines() if "Leadership lost" in line]
    assert lost and "held by replica-b" in lost[0], output[-5000:]
    assert await asyncio.to_thread(holder, cluster) == "replica-b"  # the deposed leader did not write it back


async def test_a_leader_stopped_with_sigterm_hands_the_lease_over(cluster: Cluster, emulator: Any,
                                                                  tmp_path: Path) -> None:
    async with operator_process(emulator, tmp_path, "replica-a") as (process, log):
        assert await eventually(lambda: holder(cluster) == "replica-a", what="replica-a leading")
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, timeout=30)
    assert process.returncode == 0, log.read_text()
    assert await asyncio.to_thread(holder, cluster) is None
    assert await asyncio.to_thread(candidate("replica-b").try_acquire_or_renew)  # at once, no 15 s wait
