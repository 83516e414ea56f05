"""Device specs: how to reach a device, what runs there, and the budgets a subnet must meet.

A spec is a YAML file validated strictly: an unknown key, a wrong type or an impossible
value is an error that names the file, the key path (``budgets.latency_ms``) and the reason.
Units: ``_kb`` is KiB (1,024 bytes, as MCU datasheets use it), ``_ms`` is milliseconds,
``_mhz`` is MHz, ``_mb`` is MiB, ``_s`` is seconds. Secrets never go in a spec: SSH keys
are files (``identity_file``) or come from ssh-agent.

This module is torch-free and imports only pydantic and PyYAML.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ofa_edge.errors import SpecError

SCHEMA_VERSION = 1

#: Which precisions each runtime can execute from the files our converters write.
#: ONNX models are exported as fp32 or fp16; int8 ships as full-int8 TFLite.
#: TFLite Micro runs the int8 model (its float kernels are too slow and big for an MCU).
PRECISIONS_BY_RUNTIME: dict[str, tuple[str, ...]] = {
    "tflite": ("int8", "fp32", "fp16"),
    "onnxruntime": ("fp32", "fp16"),
    "tflite-micro": ("int8",),
}
TFLITE_DELEGATES = ("none", "xnnpack", "gpu", "nnapi", "hexagon")  # or external:<path to .so>
ORT_EXECUTION_PROVIDERS = (
    "CPUExecutionProvider",
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "XnnpackExecutionProvider",
    "NnapiExecutionProvider",
    "CoreMLExecutionProvider",
)
SECRET_KEYS = {"password", "passphrase", "private_key", "secret", "token", "api_key"}
SSH_ONLY_KEYS = ("host", "user", "identity_file", "known_hosts", "ssh_config")


class _Section(BaseModel):
    """Strict: unknown keys and wrong types are errors, nothing is coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Hardware(_Section):
    cores: int = Field(gt=0, le=1024)
    clock_mhz: float = Field(gt=0, le=10_000)
    memory_mb: Optional[int] = Field(default=None, gt=0)
    sram_kb: Optional[int] = Field(default=None, gt=0)
    flash_kb: Optional[int] = Field(default=None, gt=0)
    cpu: Optional[str] = None
    accelerator: Optional[str] = None


class Connection(_Section):
    transport: Literal["local", "ssh", "none"]
    host: Optional[str] = Field(default=None, min_length=1)
    port: int = Field(default=22, ge=1, le=65535)
    user: Optional[str] = Field(default=None, min_length=1)
    identity_file: Optional[str] = Field(default=None, min_length=1)
    known_hosts: Optional[str] = Field(default=None, min_length=1)
    host_key_policy: Literal["reject", "accept-new"] = "reject"
    ssh_config: Optional[str] = Field(default=None, min_length=1)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    command_timeout_s: float = Field(default=600.0, gt=0, le=86_400)


class Runtime(_Section):
    name: Literal["tflite", "onnxruntime", "tflite-micro"]
    version: Optional[str] = None
    max_opset: Optional[int] = Field(default=None, ge=7, le=30)
    delegate: Optional[str] = None
    execution_providers: Optional[list[str]] = Field(default=None, min_length=1)
    threads: int = Field(default=1, gt=0, le=256)
    cpu_affinity: Optional[list[int]] = Field(default=None, min_length=1)


class DeviceEnv(_Section):
    python: str = Field(default="python3", min_length=1)
    work_dir: str = Field(default="~/.cache/ofa-edge", min_length=1)


class Budgets(_Section):
    latency_ms: Optional[float] = Field(default=None, gt=0)
    peak_sram_kb: Optional[float] = Field(default=None, gt=0)
    flash_kb: Optional[float] = Field(default=None, gt=0)
    macs_m: Optional[float] = Field(default=None, gt=0)
    resolution: Optional[list[int]] = Field(default=None, min_length=2, max_length=2)


class Measure(_Section):
    """How a model is timed (ofa_edge.devices.protocol): ``passes`` passes over the shuffled
    measurement set, each pass ``repeats`` x ``runs_per_repeat`` timed runs after ``warmup``; a
    reference model in every batch watches for drift (more than ``drift_limit`` from its
    baseline: the batch is measured again, at most ``drift_retries`` times)."""

    warmup: int = Field(default=10, ge=0, le=100_000)
    repeats: int = Field(default=5, gt=0, le=10_000)
    runs_per_repeat: int = Field(default=20, gt=0, le=100_000)
    statistic: Literal["median", "p90", "p10"] = "median"
    passes: int = Field(default=5, ge=1, le=100)
    pass_gap_s: float = Field(default=2.0, ge=0, le=3600)
    drift_limit: float = Field(default=0.10, gt=0, le=10)
    drift_retries: int = Field(default=2, ge=0, le=20)
    baseline_passes: int = Field(default=3, ge=1, le=100)
    drift_correction: bool = True

    @property
    def statistic_key(self) -> str:
        """The stored figure this spec's statistic reads (``p50_ms`` for median)."""
        from ofa_edge.devices.statistic import statistic_key

        return statistic_key(self.statistic)


class CyclesPerMac(_Section):
    conv: float = Field(gt=0)
    depthwise: float = Field(gt=0)
    pointwise: float = Field(gt=0)
    linear: float = Field(gt=0)


class CostModel(_Section):
    cycles_per_mac: CyclesPerMac
    #: cycles per activation element written (hard-swish, adds, requantization: work that is
    #: not MACs); 0 leaves it out
    cycles_per_element: float = Field(default=0.0, ge=0)
    runtime_sram_kb: float = Field(ge=0)
    runtime_flash_kb: float = Field(ge=0)
    source: str = Field(min_length=1)
    #: cycles per instruction, to turn a firmware's instruction count into a latency estimate;
    #: 1.0 is an assumption until a board measures it (then say where in cpi_source)
    cpi: float = Field(default=1.0, gt=0, le=100)
    cpi_source: Optional[str] = Field(default=None, min_length=1)


class MemoryRegion(_Section):
    """A memory region of the real part: where it starts and how big it is."""

    origin: int = Field(ge=0, le=0xFFFFFFFF)
    kb: int = Field(gt=0, le=1_048_576)


class Firmware(_Section):
    """How deploy builds an MCU's firmware (``ofa_edge.firmware``): the core and float ABI it
    compiles for, the part's flash and RAM regions the deployment image links against, and
    whether that image is a release build (TFLite Micro's error strings stripped)."""

    core: Literal["cortex-m4", "cortex-m7", "cortex-m55"]
    float_abi: Literal["hard", "softfp", "soft"] = "hard"
    fpu: Optional[str] = Field(default=None, pattern=r"^[a-z0-9.-]+$")  # -mfpu; default: the core's own
    flash: MemoryRegion
    ram: MemoryRegion
    release: bool = True
    #: a fixed arena; without one the test image gets all of QEMU's RAM and the deployment
    #: image the arena that the test image really used
    arena_kb: Optional[float] = Field(default=None, gt=0)


class DeviceSpec(_Section):
    schema_version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    kind: Literal["cpu", "gpu", "mcu"]
    description: Optional[str] = None
    #: an emulator (QEMU) stands in for the device: its outputs are the device's, its timings are
    #: not (deploy's latency check is not applicable, the dashboard leaves it out of latency panels)
    emulated: bool = False
    hardware: Optional[Hardware] = None  # required, except for a published latency table (latency_table)
    connection: Connection
    runtime: Runtime
    precision: Literal["int8", "fp32", "fp16"]
    device: DeviceEnv = DeviceEnv()
    budgets: Budgets = Budgets()
    measure: Measure = Measure()
    cost_model: Optional[CostModel] = None
    firmware: Optional[Firmware] = None  # an MCU's firmware build (kind mcu only)
    #: a published latency lookup table (written by ``ofa-edge import-latency-table``; a path
    #: relative to this spec): the device is not reachable, its latency comes from the table
    latency_table: Optional[str] = Field(default=None, min_length=1)

    #: the file this spec came from (not part of the schema)
    source: Optional[str] = Field(default=None, exclude=True)

    def latency_table_path(self) -> Optional[Path]:
        """``latency_table`` resolved against the spec's folder (None without one)."""
        if self.latency_table is None:
            return None
        path = Path(self.latency_table).expanduser()
        return path if path.is_absolute() or self.source is None else Path(self.source).parent / path

    def in_resolution_range(self, resolutions) -> list[int]:
        """The resolutions inside ``budgets.resolution`` (all of them when the spec sets none)."""
        if self.budgets is None or not self.budgets.resolution:
            return list(resolutions)
        lo, hi = self.budgets.resolution
        return [r for r in resolutions if lo <= r <= hi]

    def one_line(self) -> str:
        """A compact summary for ``ofa-edge specs list``."""
        c, r, b = self.connection, self.runtime, self.budgets
        where = {"local": "local", "none": "no transport"}.get(
            c.transport, f"ssh {c.ssh_config or c.host}:{c.port}"
        )
        accel = r.delegate or ",".join(p.replace("ExecutionProvider", "") for p in r.execution_providers or [])
        budgets = [
            f"{label}≤{value:g}{unit}"
            for label, value, unit in (
                ("lat", b.latency_ms, "ms"),
                ("sram", b.peak_sram_kb, "KiB"),
                ("flash", b.flash_kb, "KiB"),
                ("macs", b.macs_m, "M"),
            )
            if value is not None
        ]
        runtime = f"{r.name}{'/' + accel if accel else ''} {self.precision} {r.threads}t"
        return f"{self.name:<16} {self.kind:<4} {where:<26} {runtime:<32} {' '.join(budgets) or '-'}"


# ---------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that refuses duplicate keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> dict:
    src = str(path)
    if path.is_dir():
        raise SpecError(src, [f"is a directory, not a spec file (did you mean {src.rstrip('/')}/*.yaml?)"])
    if not path.exists():
        raise SpecError(src, ["no such file (ofa-edge specs list shows the shipped specs)"])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(src, [f"cannot read the file: {exc}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(src, [f"YAML syntax error{where}: {exc.problem or exc.context}"]) from None
    except yaml.YAMLError as exc:
        raise SpecError(src, [f"YAML syntax error: {exc}"]) from None
    if data is None:
        raise SpecError(src, ["the file is empty; a spec needs at least schema_version, name, kind, "
                              "hardware, connection, runtime and precision (see device_specs/local.yaml)"])
    if not isinstance(data, dict):
        raise SpecError(src, [f"the top level must be a mapping of keys, got a {_type_name(data)}"])
    return data


def load_spec(path: str | os.PathLike) -> DeviceSpec:
    """Read and validate one spec file; raise :class:`SpecError` listing every problem."""
    path = Path(path)
    data = _read_yaml(path)
    problems = _secret_problems(data)
    try:
        spec = DeviceSpec.model_validate(data)
    except ValidationError as exc:
        problems += [_describe_error(err) for err in exc.errors()]
        raise SpecError(str(path), _dedupe(problems)) from None
    problems += _semantic_problems(spec, path.parent)
    if problems:
        raise SpecError(str(path), _dedupe(problems))
    return spec.model_copy(update={"source": str(path)})


def check_specs(paths: list[str | os.PathLike]) -> dict[str, list[str]]:
    """Validate several specs; return ``{path: problems}`` (empty lists for good specs)."""
    report: dict[str, list[str]] = {}
    for p in paths:
        try:
            load_spec(p)
            report[str(p)] = []
        except SpecError as exc:
            report[str(p)] = exc.problems
    return report


def shipped_specs_dir() -> Path:
    """Where the shipped specs live: $OFA_EDGE_SPECS, ./device_specs, or the source tree's."""
    env = os.environ.get("OFA_EDGE_SPECS")
    if env:
        return Path(env)
    cwd = Path.cwd() / "device_specs"
    if cwd.is_dir():
        return cwd
    return Path(__file__).resolve().parents[2] / "device_specs"


def shipped_specs() -> list[Path]:
    return sorted(shipped_specs_dir().glob("*.yaml"))


def resolve_spec_path(name_or_path: str) -> Path:
    """Accept a path, or the name of a shipped spec (``local`` -> device_specs/local.yaml)."""
    p = Path(name_or_path)
    if p.exists() or p.suffix in (".yaml", ".yml") or os.sep in name_or_path:
        return p
    return shipped_specs_dir() / f"{name_or_path}.yaml"


# ---------------------------------------------------------------- error messages


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", int: "integer", float: "number",
            bool: "boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at ``loc`` (for listing allowed keys)."""
    model: Any = DeviceSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


_EXPECTED = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "model_type": "a mapping", "dict_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<", "less_than_equal": "≤"}


def _describe_error(err: dict) -> str:
    loc, kind, ctx, value = tuple(err["loc"]), err["type"], err.get("ctx", {}), err.get("input")
    key = _path(loc)
    if kind == "extra_forbidden":
        name = loc[-1]
        if str(name).lower() in SECRET_KEYS:
            return (f"{key}: secrets never go in a spec; use connection.identity_file "
                    "(a key file) or ssh-agent")
        model = _model_at(loc)
        allowed = ", ".join(k for k in model.model_fields if k != "source") if model else "?"
        return f"{key}: unknown key (allowed here: {allowed})"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind in _EXPECTED:
        return f"{key}: expected {_EXPECTED[kind]}, got {_type_name(value)} {value!r}"
    if kind in _BOUNDS:
        limit = next(iter(ctx.values()))
        shown = f"{limit:g}" if isinstance(limit, (int, float)) else limit
        return f"{key}: must be {_BOUNDS[kind]} {shown}, got {value!r}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'|(\d+)", ctx.get("expected", ""))
        allowed = ", ".join(a or b for a, b in choices)
        if key == "schema_version":
            return f"{key}: unsupported schema_version {value!r} (this ofa-edge reads {SCHEMA_VERSION})"
        return f"{key}: {value!r} is not one of: {allowed}"
    if kind == "string_pattern_mismatch":
        return f"{key}: {value!r} must be lower-case letters, digits, '-' or '_' (it names folders)"
    if kind in ("too_short", "too_long"):
        return f"{key}: {err['msg'].lower()}"
    return f"{key}: {err['msg']}"


def _secret_problems(data: Any, loc: tuple = ()) -> list[str]:
    """Flag private-key material pasted into any string value."""
    if isinstance(data, dict):
        return [p for k, v in data.items() for p in _secret_problems(v, (*loc, k))]
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in _secret_problems(v, (*loc, i))]
    if isinstance(data, str) and "PRIVATE KEY-----" in data:
        return [f"{_path(loc)}: looks like a private key; secrets never go in a spec "
                "(use connection.identity_file or ssh-agent)"]
    return []


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


# ---------------------------------------------------------------- cross-field rules


def _semantic_problems(spec: DeviceSpec, spec_dir: Path) -> list[str]:
    """Rules that span several keys. Each problem names the key to fix."""
    out: list[str] = []
    c, r, hw, b = spec.connection, spec.runtime, spec.hardware, spec.budgets

    if hw is None:
        if spec.latency_table is None:
            out.append("hardware: required (cores and clock_mhz at least), except for a device whose latency "
                       "comes from latency_table")

    # kind, transport, runtime and cost model go together
    if spec.kind == "mcu":
        if c.transport != "none":
            out.append("connection.transport: an mcu has no shell to reach; use transport: none "
                       "(latency then comes from cost_model)")
        if r.name != "tflite-micro":
            out.append(f"runtime.name: an mcu runs tflite-micro, not {r.name}")
        if spec.cost_model is None:
            out.append("cost_model: required for an mcu (cycles per MAC and runtime overheads)")
        for key in ("sram_kb", "flash_kb"):
            if hw is not None and getattr(hw, key) is None:
                out.append(f"hardware.{key}: required for an mcu")
        if spec.latency_table is not None:
            out.append("latency_table: an mcu's latency comes from its cost_model; drop latency_table")
        fw = spec.firmware
        if fw is not None and hw is not None:
            if hw.flash_kb is not None and fw.flash.kb != hw.flash_kb:
                out.append(f"firmware.flash.kb: {fw.flash.kb} differs from hardware.flash_kb {hw.flash_kb}")
            if hw.sram_kb is not None and fw.ram.kb > hw.sram_kb:
                out.append(f"firmware.ram.kb: {fw.ram.kb} exceeds hardware.sram_kb {hw.sram_kb}")
    elif spec.latency_table is not None:  # a published table stands in for the device
        if c.transport != "none":
            out.append("connection.transport: a device whose latency comes from latency_table is not reached; "
                       "use transport: none (or drop latency_table to measure it)")
        table = Path(spec.latency_table).expanduser()
        if not (table if table.is_absolute() else spec_dir / table).is_file():
            out.append(f"latency_table: {spec.latency_table} not found (relative paths are relative to the spec's "
                       "folder); run ofa-edge import-latency-table again")
        if spec.cost_model is not None:
            out.append("cost_model: not used by a device whose latency comes from latency_table")
    else:
        if c.transport == "none":
            out.append(f"connection.transport: none is only for kind mcu or a device with a latency_table; a "
                       f"{spec.kind} is measured over local or ssh")
        if r.name == "tflite-micro":
            out.append(f"runtime.name: tflite-micro is for kind mcu, not {spec.kind}")
        if spec.cost_model is not None:
            out.append("cost_model: only used by devices with no transport (kind mcu)")
    if spec.firmware is not None and spec.kind != "mcu":
        out.append(f"firmware: only for kind mcu, not {spec.kind}")

    # connection
    if c.transport == "ssh":
        if not c.host and not c.ssh_config:
            out.append("connection.host: required when connection.transport is ssh "
                       "(or set connection.ssh_config to a ~/.ssh/config host alias)")
        if c.identity_file:
            key = Path(os.path.expanduser(c.identity_file))
            key = key if key.is_absolute() else spec_dir / key
            if not key.is_file():
                out.append(f"connection.identity_file: no such key file: {key} "
                           "(create it with ssh-keygen, fix the path, or drop the key to use ssh-agent)")
    else:
        for key in SSH_ONLY_KEYS:
            if getattr(c, key) is not None:
                out.append(f"connection.{key}: only used with transport ssh (transport is {c.transport})")

    if spec.device.python == "host" and c.transport != "local":
        out.append("device.python: 'host' (this machine's Python) only works with transport local")

    # runtime and precision
    supported = PRECISIONS_BY_RUNTIME[r.name]
    if spec.precision not in supported:
        hint = " (use runtime tflite for int8)" if spec.precision == "int8" else ""
        out.append(f"precision: {spec.precision} is not available with runtime {r.name} "
                   f"(it runs {', '.join(supported)}){hint}")
    if r.delegate is not None:
        if r.name != "tflite":
            out.append(f"runtime.delegate: only for runtime tflite; {r.name} uses "
                       + ("runtime.execution_providers" if r.name == "onnxruntime" else "no delegate"))
        elif r.delegate.startswith("external:"):
            if not r.delegate[len("external:"):].startswith(("/", "~", "$HOME")):
                out.append(f"runtime.delegate: external: takes the delegate library's absolute path on the device "
                           f"(got {r.delegate!r}), e.g. external:/usr/lib/libmy_delegate.so")
        elif r.delegate not in TFLITE_DELEGATES:
            out.append(f"runtime.delegate: {r.delegate!r} is not one of: {', '.join(TFLITE_DELEGATES)}, "
                       "external:<path to .so>")
    if r.execution_providers is not None:
        if r.name != "onnxruntime":
            out.append(f"runtime.execution_providers: only for runtime onnxruntime, not {r.name}")
        for i, ep in enumerate(r.execution_providers):
            if ep not in ORT_EXECUTION_PROVIDERS:
                out.append(f"runtime.execution_providers[{i}]: {ep!r} is not one of: "
                           + ", ".join(ORT_EXECUTION_PROVIDERS))
    if r.max_opset is not None and r.name != "onnxruntime":
        out.append(f"runtime.max_opset: only for runtime onnxruntime, not {r.name}")
    # budgets
    if b.resolution is not None:
        lo, hi = b.resolution
        if not 8 <= lo <= hi <= 1024:
            out.append(f"budgets.resolution: expected [min, max] with 8 ≤ min ≤ max ≤ 1024, got {b.resolution}")
    return out + ([] if hw is None else _hardware_problems(hw, r, b))


def _hardware_problems(hw: Hardware, r: Runtime, b: Budgets) -> list[str]:
    """Threads, pinning and memory budgets against the hardware."""
    out = []
    if r.threads > hw.cores:
        out.append(f"runtime.threads: {r.threads} threads oversubscribe the {hw.cores} cores "
                   "in hardware.cores")
    for i, cpu in enumerate(r.cpu_affinity or []):
        if not 0 <= cpu < hw.cores:
            out.append(f"runtime.cpu_affinity[{i}]: core {cpu} does not exist "
                       f"(hardware.cores is {hw.cores}, so 0..{hw.cores - 1})")
    if b.peak_sram_kb is not None and hw.sram_kb is not None and b.peak_sram_kb > hw.sram_kb:
        out.append(f"budgets.peak_sram_kb: {b.peak_sram_kb:g} exceeds hardware.sram_kb {hw.sram_kb}")
    if b.flash_kb is not None and hw.flash_kb is not None and b.flash_kb > hw.flash_kb:
        out.append(f"budgets.flash_kb: {b.flash_kb:g} exceeds hardware.flash_kb {hw.flash_kb}")
    return out
