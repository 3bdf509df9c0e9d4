"""Hosts on this machine: network namespaces on one bridge, each with its private address; a TCP
forwarder that makes a loopback-only service (the machine's Postgres) reachable by the bridge address.

Needs root (CAP_NET_ADMIN). `hosts()` skips, saying why, only where namespaces, veth pairs or a bridge
cannot be made; wherever they can (CI runs as root), the test runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Hosts:
    """The bridge's address (the host namespace: Redis, Postgres) and each namespace's name and address."""

    bridge_address: str
    namespaces: dict[str, str]  # host name -> namespace
    addresses: dict[str, str]  # host name -> its address on the bridge

    def command(self, host: str, argv: list[str]) -> list[str]:
        """`argv` run inside `host`'s namespace (same files and processes; its own network)."""
        return ["ip", "netns", "exec", self.namespaces[host], *argv]


def ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace, "ip"] if namespace else ["ip"]
    subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=30)


def namespaces_can_be_made(probe: str) -> str | None:
    """Why the hosts cannot be made here (a namespace, a veth pair, a bridge), or None."""
    steps = [
        (["ip", "netns", "add", probe], ["ip", "netns", "del", probe]),
        (["ip", "link", "add", f"{probe}a", "type", "veth", "peer", "name", f"{probe}b"],
         ["ip", "link", "del", f"{probe}a"]),
        (["ip", "link", "add", "name", f"{probe}r", "type", "bridge"], ["ip", "link", "del", f"{probe}r"]),
    ]  # fmt: skip
    for make, undo in steps:
        try:
            made = subprocess.run(make, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            return "no `ip` command (iproute2)"
        if made.returncode != 0:
            return f"`{' '.join(make[:3])}` failed (needs root, CAP_NET_ADMIN): {made.stderr.strip()}"
        subprocess.run(undo, capture_output=True, timeout=30)
    return None


@contextmanager
def hosts(names: tuple[str, ...]) -> Iterator[Hosts]:
    """One namespace per name on a bridge 10.231.N.0/24 (the bridge .1, the hosts .2, .3, ...); all of
    them deleted afterwards, whatever happened."""
    tag = f"{os.getpid() % 0xFFFF:04x}"
    why_not = namespaces_can_be_made(f"gtp{tag}")
    if why_not is not None:  # where they can be made (CI runs as root), the test runs and must pass
        pytest.skip(f"network namespaces cannot be made: {why_not}")
    subnet = f"10.231.{os.getpid() % 250}"
    bridge = f"gtbr{tag}"
    made = Hosts(f"{subnet}.1", {}, {})
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{made.bridge_address}/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        for index, name in enumerate(names):
            namespace, outside, inside = f"gt{tag}{name}", f"gtv{tag}{index}", f"gtp{tag}{index}"
            ip("netns", "add", namespace)
            made.namespaces[name] = namespace
            ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            ip("link", "set", inside, "netns", namespace)
            ip("link", "set", outside, "master", bridge)
            ip("link", "set", outside, "up")
            made.addresses[name] = f"{subnet}.{index + 2}"
            ip("addr", "add", f"{made.addresses[name]}/24", "dev", inside, namespace=namespace)
            ip("link", "set", inside, "up", namespace=namespace)
            ip("link", "set", "lo", "up", namespace=namespace)
        yield made
    finally:
        for namespace in made.namespaces.values():  # its veth end goes with it, and so its peer
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


@contextmanager
def tcp_forwarder(listen_host: str, target: tuple[str, int]) -> Iterator[int]:
    """Threads that accept on listen_host (a free port, yielded) and pipe each connection to `target`."""
    server = socket.create_server((listen_host, 0))
    stopping = threading.Event()
    links: list[socket.socket] = []

    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for end in (source, sink):
            with suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(target)
            links.extend((client, upstream))
            threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield server.getsockname()[1]
    finally:
        stopping.set()
        with suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        server.close()
        for link in links:
            with suppress(OSError):
                link.close()
