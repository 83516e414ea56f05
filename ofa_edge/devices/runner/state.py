"""The device's state while it measures: CPU governor and clock of each pinned core, temperature,
throttling flags (Raspberry Pi's ``vcgencmd``) and Jetson's power model (``nvpmodel``)."""

import glob
import os
import subprocess

from .common import read_int, read_text

_CPU = "/sys/devices/system/cpu/cpu%d/cpufreq/"
# vcgencmd get_throttled bits (Raspberry Pi firmware): now (0-3) and since boot (16-19).
_THROTTLE_BITS = {0: "under-voltage", 1: "arm frequency capped", 2: "throttled", 3: "soft temperature limit"}


def cpufreq(cpu=0):
    """Governor and clocks (MHz) of one core, or None where cpufreq is not exposed."""
    base = _CPU % cpu
    if not os.path.isdir(base):
        return None
    governor = read_text(base + "scaling_governor")
    result = {"governor": governor.strip() if governor else None}
    for key, name in (("cur_mhz", "scaling_cur_freq"), ("max_mhz", "scaling_max_freq"),
                      ("hw_max_mhz", "cpuinfo_max_freq"), ("min_mhz", "scaling_min_freq")):
        khz = read_int(base + name)
        result[key] = round(khz / 1000.0, 1) if khz is not None else None
    return result


def temperatures():
    zones = []
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        milli = read_int(os.path.join(zone, "temp"))
        if milli is None:
            continue
        kind = read_text(os.path.join(zone, "type"))
        zones.append({"zone": os.path.basename(zone), "type": kind.strip() if kind else None,
                      "celsius": round(milli / 1000.0, 1)})
    return zones


def _tool(*command):
    """Output of a device tool (``vcgencmd``, ``nvpmodel``), or None when it is absent or fails."""
    if not any(os.access(os.path.join(folder, command[0]), os.X_OK)
               for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) + ["/usr/sbin", "/opt/vc/bin"]):
        return None
    try:
        done = subprocess.run(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=5)
    except Exception:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def throttling():
    """The Pi firmware's throttling flags, or None without ``vcgencmd``."""
    text = _tool("vcgencmd", "get_throttled")  # throttled=0x50000
    if not text or "=" not in text:
        return None
    try:
        flags = int(text.split("=", 1)[1], 16)
    except ValueError:
        return None
    now = [name for bit, name in _THROTTLE_BITS.items() if flags & (1 << bit)]
    since_boot = [name for bit, name in _THROTTLE_BITS.items() if flags & (1 << (bit + 16))]
    return {"flags": hex(flags), "now": now, "since_boot": since_boot}


def temperature_c():
    """The hottest thermal zone, or the Pi firmware's reading (``vcgencmd measure_temp``)."""
    zones = [z["celsius"] for z in temperatures()]
    if zones:
        return max(zones)
    text = _tool("vcgencmd", "measure_temp")  # temp=48.3'C
    try:
        return float(text.split("=", 1)[1].split("'")[0]) if text else None
    except (IndexError, ValueError):
        return None


def device_state(cpus=None):
    """Governor and current clock of each pinned core (all cores without pinning), the temperature,
    throttling flags and nvpmodel: recorded before and after each timing call."""
    cores = cpus if cpus else list(range(os.cpu_count() or 1))
    per_core = []
    for cpu in cores:
        freq = cpufreq(cpu)
        if freq:
            per_core.append({"cpu": cpu, "governor": freq["governor"], "cur_mhz": freq["cur_mhz"],
                             "max_mhz": freq["max_mhz"]})
    nvpmodel = _tool("nvpmodel", "-q")
    return {"cores": per_core, "governor": per_core[0]["governor"] if per_core else None,
            "temperature_c": temperature_c(), "throttled": throttling(),
            "nvpmodel": nvpmodel.splitlines()[0] if nvpmodel else None}


def throttling_between(before, after, drop=0.10):
    """Why a timing call was throttled (a pinned core's clock fell more than ``drop``, or the
    firmware flags throttling now), or None."""
    reasons = []
    if before and after:
        start = dict((c["cpu"], c.get("cur_mhz")) for c in before.get("cores", []))
        for core in after.get("cores", []):
            was, now = start.get(core["cpu"]), core.get("cur_mhz")
            if was and now and now < (1.0 - drop) * was:
                reasons.append("cpu%d clock %.0f -> %.0f MHz" % (core["cpu"], was, now))
    flags = (after or {}).get("throttled") or {}
    if flags.get("now"):
        reasons.append("firmware: %s" % ", ".join(flags["now"]))
    return "; ".join(reasons) or None
