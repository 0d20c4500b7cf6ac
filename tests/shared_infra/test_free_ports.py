"""Ports for the processes of a local stack."""

from __future__ import annotations

import socket

from shared.local import free_port, free_ports


def test_ports_asked_for_together_differ_and_are_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:  # each can be bound once handed out
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_port_is_not_handed_out_twice() -> None:
    # Released at once, a port is the system's to offer again; the process never repeats one.
    first = set(free_ports(32))
    one_by_one = {free_port() for _ in range(256)}
    assert len(one_by_one) == 256
    assert not first & one_by_one
