"""Ray on this machine or on a cluster: start it in this process or join one (start_ray), and a
real multi-node cluster on loopback for tests and benchmarks (local_cluster). rlscratch.sweep,
rlscratch.search and rlscratch.distributed start Ray only through here, so the loopback and
authentication rules below hold for all of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from rlscratch.errors import UserError

PACKAGE_PARENT = Path(__file__).resolve().parents[1]  # what Ray's worker processes put on PYTHONPATH


def _keep_loopback(address: str | None) -> None:
    """Ray rewrites 127.0.0.1 into the machine's outward address (for clusters of many machines); a
    sweep on this machine, or on a cluster started on loopback, must not open ports anywhere else.
    Ray reads this switch when it is imported (and its subprocesses inherit it)."""
    if address is None or address.split(":")[0] in ("127.0.0.1", "localhost"):
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # "not a cluster": addresses stay on loopback
        if "ray" in sys.modules:
            import ray._private.ray_constants as constants

            constants.ENABLE_RAY_CLUSTER = False


def _private_auth_token() -> None:
    """A Ray started in this process authenticates with a token. Left to itself, Ray writes one to
    ~/.ray/auth_token when none is there -- and two runs starting at once on a fresh machine each write
    their own, so one cluster's workers read the other's token and are refused. A private cluster gets
    its own token in this process's environment instead (its workers inherit it); a token the user
    set up (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or the file) is left to Ray."""
    import secrets

    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if "RAY_AUTH_TOKEN" in os.environ or "RAY_AUTH_TOKEN_PATH" in os.environ:
        return
    if (Path.home() / ".ray" / "auth_token").is_file():
        return
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def start_ray(address: str | None, cpus: int | None) -> float:
    """Start Ray in this process (address None) or join a cluster; returns the seconds it took."""
    _keep_loopback(address)
    if address is None:
        _private_auth_token()
    import ray

    begin = time.perf_counter()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the run dirs hold the real logs
    kwargs: dict = {"log_to_driver": False, "include_dashboard": False, "configure_logging": False}
    if address is None:
        kwargs.update(num_cpus=cpus or os.cpu_count(), object_store_memory=100 * 2**20)
    else:
        kwargs["address"] = address
    # Ray reads RAY_AUTH_MODE and the token once and keeps them: a process that imported Ray before the
    # mode was set, or that joined another cluster before, would join this one with no token or the
    # old one. Re-read both now, as Ray itself does when it switches token auth on.
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise UserError(f"--address {address}: no Ray cluster there ({err}); start one with `ray start --head` "
                        "or leave --address out to run on this machine") from None
    return time.perf_counter() - begin


# -- a cluster on this machine, for tests and benchmarks ------------------------------------------
# Ray rewrites 127.0.0.1 into the machine's outward address unless told this is no multi-machine
# cluster (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) -- and then refuses to add a second node. Each node's
# `ray start` runs with that one refusal lifted in its own process; what it starts inherits loopback.
_RAY_START = """import sys
import ray._private.ray_constants as constants
import ray._private.services as services
constants.ENABLE_RAY_CLUSTER = True
services.get_node_ip_address = lambda address=None: "127.0.0.1"
from ray.scripts.scripts import main
sys.argv = ["ray"] + sys.argv[1:]
main()
"""


_WAIT_FOR_CPUS = """import sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False)
deadline = time.monotonic() + 240
while ray.cluster_resources().get("CPU", 0) < float(sys.argv[2]) and time.monotonic() < deadline:
    time.sleep(0.2)
sys.exit(0 if ray.cluster_resources().get("CPU", 0) >= float(sys.argv[2]) else 1)
"""


@contextlib.contextmanager
def local_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[tuple[str, dict]]:
    """Start ``nodes`` Ray nodes on 127.0.0.1 (`ray start --head`, then `ray start --address`), yield
    (address, environment for drivers) and stop them all, whatever happens: each `ray start --block`
    leads its own process group, which is what is signalled. The cluster has a token of its own, in
    that environment (RAY_AUTH_TOKEN): not the shared ~/.ray/auth_token, which another cluster
    starting at the same moment could overwrite between this one's start and its drivers joining."""
    import secrets
    import socket
    import tempfile

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    temp = Path(tempfile.mkdtemp(prefix="rlray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token", RAY_USAGE_STATS_ENABLED="0",
               RAY_AUTH_TOKEN=secrets.token_hex(32),
               PYTHONPATH=os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    common = ["--num-cpus", str(cpus_per_node), "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
              "--object-store-memory", str(80 * 2**20), "--block"]
    started: list[subprocess.Popen] = []
    try:
        for i in range(nodes):
            role = ["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard", "false",
                    "--ray-client-server-port", str(free_port())] if i == 0 else ["--address", f"127.0.0.1:{port}"]
            log = temp / f"node{i}.log"
            started.append(subprocess.Popen([sys.executable, "-c", _RAY_START, "start", *role, *common], env=env,
                                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True))
            deadline = time.monotonic() + 300
            while "Ray runtime started" not in log.read_text():
                if started[-1].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start (node {i}) failed: {log.read_text()[-1500:]}")
                time.sleep(0.5)
        # "Ray runtime started" is the node's word, not yet the scheduler's: a driver that comes at once
        # may see the head's CPUs only, and Tune (reusing actors) then runs every trial on the head.
        # A throwaway driver waits until the cluster counts every node's CPUs.
        subprocess.run([sys.executable, "-c", _WAIT_FOR_CPUS, f"127.0.0.1:{port}", str(nodes * cpus_per_node)],
                       env=env, check=True, timeout=300, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield f"127.0.0.1:{port}", env
    finally:
        for node in reversed(started):
            with contextlib.suppress(ProcessLookupError):  # a node that died already must not hide the real error
                os.killpg(node.pid, signal.SIGTERM)
        for node in reversed(started):
            try:
                node.wait(timeout=10)
            except subprocess.TimeoutExpired:  # still draining its tasks: nothing here worth waiting for
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()
        shutil.rmtree(temp, ignore_errors=True)
