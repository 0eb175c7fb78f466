"""Agent configuration: TOML at /etc/gpusleuth/agent.toml, one slots dataclass per section, strict validation.

Every key has a default (README lists them). An unknown key, a wrong type or an out-of-range value raises
ConfigError naming the full key (`probes.syscalls.slow_threshold_ms`) and what is allowed; the CLI exits 2.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpusleuth.probes import registry
from gpusleuth.probes.config import ConfigError, check_choice, check_range

DEFAULT_PATH = Path("/etc/gpusleuth/agent.toml")


@dataclass(slots=True)
class AgentSection:
    pid_file: str = "/run/gpusleuth/agent.pid"
    log_file: str = "/var/log/gpusleuth/agent.log"
    log_level: str = "info"

    def __post_init__(self) -> None:
        check_choice("log_level", self.log_level, ["debug", "info", "warning", "error"])


@dataclass(slots=True)
class ControlSection:
    socket: str = "/run/gpusleuth/agent.sock"
    group: str = ""  # a group whose members may use the socket too (mode 0660); empty = root only (0600)


@dataclass(slots=True)
class StoreSection:
    memory_cap_mb: int = 32  # live window only: the recorder keeps history on disk

    def __post_init__(self) -> None:
        check_range("memory_cap_mb", self.memory_cap_mb, 8, 65536)


@dataclass(slots=True)
class RecorderSection:
    is_enabled: bool = True
    directory: str = "/var/lib/gpusleuth"
    flush_interval_s: float = 5.0
    segment_max_mb: int = 64
    segment_max_age_s: float = 600.0
    total_cap_mb: int = 2048

    def __post_init__(self) -> None:
        check_range("flush_interval_s", self.flush_interval_s, 0.1, 300)
        check_range("segment_max_mb", self.segment_max_mb, 1, 4096)
        check_range("segment_max_age_s", self.segment_max_age_s, 1, 86400)
        check_range("total_cap_mb", self.total_cap_mb, 16, 10_000_000)
        if self.total_cap_mb < self.segment_max_mb:
            raise ConfigError("total_cap_mb", f"must be >= segment_max_mb ({self.segment_max_mb})")


@dataclass(slots=True)
class ExporterSection:
    is_enabled: bool = True
    listen: str = "127.0.0.1:9464"
    otlp_traces_endpoint: str = ""  # OTLP/HTTP collector for request traces (exporters/otlp_traces.py); "" = off
    render_interval_s: float = 1.0  # /metrics is rendered this often, off the scrape path
    series_budget: int = 2000  # samples per source (collector) and scrape; the rest are left out and counted
    # per-thread series for the N threads with the most run-queue + off-CPU time (0 = none): the runbooks' and the
    # dashboard's per-thread checks need a few; every thread of a thread-per-request client would grow without end
    top_threads: int = 16
    bucket_factor: int = 4  # latency histogram buckets grow by this factor (2, 4 or 8): 4 gives 14 buckets

    def __post_init__(self) -> None:
        check_range("render_interval_s", self.render_interval_s, 0.1, 60)
        check_range("series_budget", self.series_budget, 100, 1_000_000)
        check_range("top_threads", self.top_threads, 0, 10_000)
        check_choice("bucket_factor", self.bucket_factor, [2, 4, 8])
        if self.otlp_traces_endpoint and not self.otlp_traces_endpoint.startswith(("http://", "https://")):
            raise ConfigError("otlp_traces_endpoint", f"{self.otlp_traces_endpoint!r} is not http(s)://HOST:PORT")
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError("listen", f"{self.listen!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


@dataclass(slots=True)
class WatchSection:
    """Which processes the per-process probes look at. A process matches if any rule matches."""

    pids: list[int] = field(default_factory=list)
    # gs-*: the bundled engine, the demo's load generator and the TUI (probes/procname.py); never the agent itself
    comms: list[str] = field(default_factory=lambda: ["python*", "pt_main_thread", "vllm*", "sglang*",
                                                      "tritonserver*", "gs-*"])
    cgroups: list[str] = field(default_factory=list)  # cgroup v2 paths, e.g. /sys/fs/cgroup/system.slice/x.service
    is_all: bool = False  # watch every process (costlier on busy hosts)
    include_span_senders: bool = True  # processes that send engine spans are watched automatically
    inherit_children: bool = True  # a child of a watched process is watched from its fork (in the kernel)
    rescan_interval_s: float = 2.0

    def __post_init__(self) -> None:
        check_range("rescan_interval_s", self.rescan_interval_s, 0.1, 3600)
        for i, pid in enumerate(self.pids):
            check_range(f"pids[{i}]", pid, 1, 2**22)
        for i, pattern in enumerate(self.comms):
            if not pattern or len(pattern) > 64:
                raise ConfigError(f"comms[{i}]", "must be a non-empty shell pattern of at most 64 characters")
            fnmatch.translate(pattern)


@dataclass(slots=True)
class Config:
    agent: AgentSection = field(default_factory=AgentSection)
    control: ControlSection = field(default_factory=ControlSection)
    store: StoreSection = field(default_factory=StoreSection)
    recorder: RecorderSection = field(default_factory=RecorderSection)
    exporter: ExporterSection = field(default_factory=ExporterSection)
    watch: WatchSection = field(default_factory=WatchSection)
    enabled_probes: list[str] = field(default_factory=lambda: list(registry.DEFAULT_ENABLED))
    probes: dict[str, Any] = field(default_factory=dict)  # probe name -> its config dataclass
    source: str = "<defaults>"


_SECTIONS = {"agent": AgentSection, "control": ControlSection, "store": StoreSection,
             "recorder": RecorderSection, "exporter": ExporterSection, "watch": WatchSection}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return {bool: "boolean", int: "integer", float: "number", str: "string"}.get(tp, str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check a TOML value against a dataclass field type; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, item_tp) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (bool, int, float, str):
        if type(value) is not tp:
            raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise AssertionError(f"config field {key} has unsupported type {tp!r}")


def build_section(cls: type, data: Any, prefix: str) -> Any:
    """Make dataclass `cls` from a TOML table, naming `prefix.key` in every error."""
    if not isinstance(data, dict):
        raise ConfigError(prefix, f"expected a table [{prefix}], got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{prefix}.{key}", f"unknown key; allowed keys in [{prefix}]: {allowed}")
        kwargs[key] = _coerce(f"{prefix}.{key}", value, hints[key])
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.key}" if exc.key else prefix, exc.message) from None


def from_mapping(data: dict[str, Any], source: str = "<mapping>") -> Config:
    """Validate a parsed TOML document into a Config."""
    cfg = Config(source=source)
    for key, value in data.items():
        if key in _SECTIONS:
            setattr(cfg, key, build_section(_SECTIONS[key], value, key))
        elif key == "probes":
            _load_probes(cfg, value)
        else:
            allowed = ", ".join(sorted([*_SECTIONS, "probes"]))
            raise ConfigError(key, f"unknown section; allowed sections: {allowed}")
    for name in cfg.enabled_probes:
        if name not in cfg.probes:
            try:
                cfg.probes[name] = registry.config_class(name)()
            except ImportError:
                cfg.probes[name] = None  # the probe's module is missing; the agent reports it unavailable
    return cfg


def _load_probes(cfg: Config, table: Any) -> None:
    if not isinstance(table, dict):
        raise ConfigError("probes", "expected a table [probes]")
    for key, value in table.items():
        if key == "enabled":
            names = _coerce("probes.enabled", value, list[str])
            for i, name in enumerate(names):
                if name not in registry.PROBES:
                    raise ConfigError(f"probes.enabled[{i}]",
                                      f"unknown probe {name!r}; known probes: {', '.join(registry.PROBES)}")
            cfg.enabled_probes = names
        elif key in registry.PROBES:
            try:
                cls = registry.config_class(key)
            except ImportError as exc:
                raise ConfigError(f"probes.{key}", f"probe cannot be loaded on this install: {exc}") from None
            cfg.probes[key] = build_section(cls, value, f"probes.{key}")
        else:
            raise ConfigError(f"probes.{key}",
                              f"unknown probe; known probes: {', '.join(registry.PROBES)} (or 'enabled')")


def load(path: Path | str | None = None, *, is_required: bool = False) -> Config:
    """Load and validate the config file; a missing default file means defaults, a missing explicit one is an error."""
    path = Path(path) if path is not None else DEFAULT_PATH
    try:
        exists = path.exists()
    except PermissionError:
        raise ConfigError("", f"permission denied reading {path}: run as root (sudo)") from None
    if not exists:
        if is_required:
            raise ConfigError("", f"config file {path} does not exist")
        return from_mapping({}, source=f"{path} (absent: defaults)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror} (run as root, or fix the file's mode)") from None
    return from_mapping(data, source=str(path))
