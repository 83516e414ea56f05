"""The device-side runner: one stdlib + numpy + runtime script pushed to edge devices.

Nothing here imports torch or tensorflow: ``runner.py`` runs on the device alone, and
this package only tells the host where it is and which protocol it speaks.
"""

from pathlib import Path

from .runner import PROTOCOL_VERSION, RUNNER_VERSION

RUNNER_PATH = Path(__file__).with_name("runner.py")

__all__ = ["PROTOCOL_VERSION", "RUNNER_PATH", "RUNNER_VERSION"]
