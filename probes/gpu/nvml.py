"""The one door to NVML: every call goes through `Nvml.query`, which turns errors into an explicit NA value.

Like nvitop's `libnvml.nvmlQuery`: a function missing from the Python binding or from the driver's library is
logged once and then answers NA; NOT_SUPPORTED answers NA and, when the caller gives a `key`, is remembered so the
call is never made again for that device (saves CPU on every later poll). A lost GPU (GPU_IS_LOST or
RESET_REQUIRED) is the one error whose behaviour differs for the caller: it raises `GpuLost`, so the sampler marks
that GPU lost and keeps sampling the others. The NVML module is injected (`pynvml` on a host, tests/fake_nvml.py in
tests), so this file imports no NVML at import time.
"""
from __future__ import annotations

import importlib
import logging
from collections import Counter
from typing import Any, Callable, Hashable

log = logging.getLogger("gpusleuth.probes.gpu.probe")


class _NotAvailable:
    """The value of a query that NVML could not answer. Falsy, and rendered as None in snapshots."""

    _instance: "_NotAvailable | None" = None

    def __new__(cls) -> "_NotAvailable":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "NA"


NA: Any = _NotAvailable()


def or_none(value: Any) -> Any:
    """NA -> None (for JSON snapshots); anything else unchanged."""
    return None if value is NA else value


def as_text(value: Any) -> str:
    """A string NVML returned: some pynvml calls give str, others bytes (nvmlSystemGetNVMLVersion, struct fields)."""
    if value is NA or value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class GpuLost(Exception):
    """A device answered GPU_IS_LOST or RESET_REQUIRED: stop sampling it."""


class NvmlUnavailable(Exception):
    """NVML cannot be used on this host; the message says why and how to fix it."""


class _Never(Exception):
    """Stands in for an error class an old binding does not define, so `except` clauses stay valid."""


_INIT_REASONS = {
    "NVMLError_LibraryNotFound": "libnvidia-ml.so.1 not found: install the NVIDIA driver (or expose it to this "
                                 "container with the NVIDIA container toolkit)",
    "NVMLError_DriverNotLoaded": "the NVIDIA kernel driver is not loaded (check `lsmod | grep nvidia`, "
                                 "`nvidia-smi`)",
    "NVMLError_NoPermission": "no permission to open /dev/nvidia*: run the agent as root or in the video group",
    "NVMLError_LibRmVersionMismatch": "NVML library and kernel driver versions differ: reboot or reload the "
                                      "driver after the upgrade",
    "NVMLError_FunctionNotFound": "the NVIDIA driver is too old for this NVML binding (need R450 or newer)",
}


def load_module(module: Any = None) -> Any:
    """The NVML binding to use: `module` when injected, else `pynvml` from nvidia-ml-py."""
    if module is not None:
        return module
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        raise NvmlUnavailable("python package nvidia-ml-py is not installed: pip install nvidia-ml-py") from None


class Nvml:
    """NVML through one wrapper. `nv` is the binding module (pynvml or a fake with the same names)."""

    def __init__(self, nv: Any) -> None:
        self.nv = nv
        self.errors: Counter[str] = Counter()  # "function:ErrorClass" -> count, for `agent status`
        self._missing: set[str] = set()
        self._unsupported: set[Hashable] = set()
        err = lambda name: getattr(nv, name, _Never)  # noqa: E731 - short alias for optional classes
        self.Error = getattr(nv, "NVMLError", _Never)
        self.NotSupported = err("NVMLError_NotSupported")
        # pynvml turns FUNCTION_NOT_FOUND of its unversioned process-list calls into NVMLLibraryMismatchError
        self.FunctionNotFound = (err("NVMLError_FunctionNotFound"), err("NVMLLibraryMismatchError"))
        self.NotFound = err("NVMLError_NotFound")
        self.Timeout = err("NVMLError_Timeout")
        self.Uninitialized = err("NVMLError_Uninitialized")
        self.lost_errors = (err("NVMLError_GpuIsLost"), err("NVMLError_ResetRequired"))
        self.is_initialized = False

    def init(self) -> None:
        """nvmlInit, with a failure turned into NvmlUnavailable naming the fix."""
        try:
            self.nv.nvmlInit()
        except self.Error as exc:
            reason = _INIT_REASONS.get(type(exc).__name__, f"nvmlInit failed: {exc}")
            raise NvmlUnavailable(reason) from None
        self.is_initialized = True

    def shutdown(self) -> None:
        if not self.is_initialized:
            return
        self.is_initialized = False
        try:
            self.nv.nvmlShutdown()
        except self.Error as exc:  # shutting down anyway; nothing to recover
            log.debug("nvmlShutdown: %s", exc)

    def is_unsupported(self, key: Hashable) -> bool:
        return key in self._unsupported

    def query(self, name: str, *args: Any, key: Hashable = None, no_data: Any = NA, **kwargs: Any) -> Any:
        """Call NVML function `name`; NA when it cannot answer. Raises GpuLost for a lost device.

        `key` (e.g. (gpu_index, name)) remembers NOT_SUPPORTED / FUNCTION_NOT_FOUND so later calls skip NVML.
        `no_data` is returned for NOT_FOUND and TIMEOUT, which sample and event calls use to mean "nothing new".
        """
        if key is not None and key in self._unsupported:
            return NA
        fn: Callable[..., Any] | None = getattr(self.nv, name, None)
        if fn is None:
            self._log_missing(name, "not in this nvidia-ml-py")
            return NA
        try:
            return fn(*args, **kwargs)
        except (self.NotFound, self.Timeout):
            return no_data
        except self.NotSupported:
            self._remember(key, name, "NotSupported")
            return NA
        except self.FunctionNotFound:
            self._log_missing(name, "not in this driver's libnvidia-ml")
            self._remember(key, name, "FunctionNotFound")
            return NA
        except self.lost_errors as exc:
            raise GpuLost(f"{name}: {exc}") from None
        except self.Error as exc:
            self.errors[f"{name}:{type(exc).__name__}"] += 1
            return NA

    def _remember(self, key: Hashable, name: str, why: str) -> None:
        self.errors[f"{name}:{why}"] += 1
        if key is not None:
            self._unsupported.add(key)

    def _log_missing(self, name: str, where: str) -> None:
        if name not in self._missing:
            self._missing.add(name)
            log.warning("NVML function %s is %s; its values are reported as not available", name, where)

    @property
    def missing_functions(self) -> list[str]:
        return sorted(self._missing)

    def const(self, name: str, default: Any = None) -> Any:
        """A constant of the binding (older bindings lack some; `default` then)."""
        return getattr(self.nv, name, default)
