"""The device-side runner: a small stdlib + numpy + runtime package, shipped to a device as one
zipapp (``python3 ofa_edge_runner.pyz info``) by ``ofa_edge.devices.runner_host``.

Nothing here imports torch, tensorflow or ofa_edge: the package runs on the device alone, on
CPython 3.6 and newer (a test keeps it at 3.6 syntax and standard library). Commands, the
answer format and the statistics are described in ``cli.py``.
"""

PROTOCOL_VERSION = 1
RUNNER_VERSION = "1.2.0"
