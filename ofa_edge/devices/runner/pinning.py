"""CPU pinning: parse a CPU list and pin every thread of the process to it."""

import os
import platform

from .common import RunnerError, exc_line

def parse_cpus(text: str):
    cpus = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                low, high = part.split("-", 1)
                cpus.update(range(int(low), int(high) + 1))
            else:
                cpus.add(int(part))
    except ValueError:
        raise RunnerError("--affinity must be a CPU list like 0,1 or 2-3, got %r" % text)
    if not cpus or min(cpus) < 0:
        raise RunnerError("--affinity must list at least one CPU >= 0, got %r" % text)
    return sorted(cpus)


def current_affinity():
    if hasattr(os, "sched_getaffinity"):
        try:
            return sorted(os.sched_getaffinity(0))
        except Exception:
            return None
    return None


def apply_affinity(cpus, warnings):
    """Pin every thread of this process (and threads created later) to ``cpus``."""
    if cpus is None:
        return False
    if not hasattr(os, "sched_setaffinity"):
        warnings.append("--affinity ignored: os.sched_setaffinity is not available on %s"
                        % platform.system())
        return False
    try:
        os.sched_setaffinity(0, cpus)
    except Exception as exc:
        warnings.append("--affinity %s not applied: %s" % (",".join(map(str, cpus)), exc_line(exc)))
        return False
    # sched_setaffinity(0) pins the calling thread only: pin the threads that already exist.
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ():
        try:
            os.sched_setaffinity(int(tid), cpus)
        except Exception:
            pass
    return True


