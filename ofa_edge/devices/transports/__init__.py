"""How ofa-edge reaches a device: one small interface, three implementations.

``make_transport(spec)`` picks one from ``spec.connection.transport``:

* ``local`` -> :class:`LocalTransport` (this machine, commands in a separate process)
* ``ssh``   -> :class:`SshTransport` (paramiko; imported only when used)
* ``none``  -> an error: an MCU has no shell; its latency comes from its cost model

:class:`MockTransport` is for unit tests. All errors are :class:`TransportError` subclasses
(an :class:`~ofa_edge.errors.OfaEdgeError`) with a one-line message.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ofa_edge.devices.transports.base import (
    AuthError,
    CommandFailed,
    CommandTimeout,
    ConnectError,
    HostKeyError,
    LinkDropped,
    NoTransport,
    Result,
    Transport,
    TransportError,
    expand_home,
    remote_path_join,
    to_shell,
)
from ofa_edge.devices.transports.local import LocalTransport
from ofa_edge.devices.transports.mock import FakeClock, MockTransport

if TYPE_CHECKING:
    from ofa_edge.devices.spec import DeviceSpec
    from ofa_edge.devices.transports.ssh import SshTransport

__all__ = [
    "AuthError", "CommandFailed", "CommandTimeout", "ConnectError", "FakeClock", "HostKeyError",
    "LinkDropped", "LocalTransport", "MockTransport", "NoTransport", "Result", "SshTransport",
    "Transport", "TransportError", "expand_home", "make_transport", "remote_path_join", "to_shell",
]


def make_transport(spec: "DeviceSpec", **overrides: Any) -> Transport:
    """The transport for a device spec. ``overrides`` go to the transport's constructor
    (for ssh e.g. ``ssh_config_path=`` or ``reconnect_delays=``)."""
    c = spec.connection
    if c.transport == "local":
        return LocalTransport(**{"command_timeout": c.command_timeout_s, **overrides})
    if c.transport == "ssh":
        from ofa_edge.devices.transports.ssh import SshTransport

        return SshTransport.from_spec(spec, **overrides)
    if c.transport == "none" and spec.latency_table is not None:
        raise NoTransport(f"device {spec.name} is a published latency table ({spec.latency_table}), not a device "
                          "ofa-edge can reach: there is no shell to run commands on")
    if c.transport == "none":
        raise NoTransport(f"device {spec.name} is a {spec.kind} with connection.transport none: it "
                          "has no shell to run commands on; its latency and memory come from its "
                          "cost_model, so measure it with the cost model instead")
    raise NoTransport(f"device {spec.name}: unknown connection.transport {c.transport!r} "
                      "(use local, ssh or none)")


def __getattr__(name: str):  # lazy: SshTransport imports paramiko
    if name == "SshTransport":
        from ofa_edge.devices.transports.ssh import SshTransport

        return SshTransport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
