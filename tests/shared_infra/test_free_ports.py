"""Ports for the processes of a local stack, asked for together."""

from __future__ import annotations

import socket

from shared.local import free_ports


def test_ports_asked_for_together_differ_and_are_free() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64
    for port in ports:  # each can be bound once handed out
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))
