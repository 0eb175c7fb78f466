"""What the GPU probe needs from the host (`agent probes`), each checked now without initialising NVML."""
from __future__ import annotations

import ctypes
import importlib.util
import os

from gpusleuth.probes.base import Requirement


def host_requirements(kmsg_path: str = "/dev/kmsg") -> list[Requirement]:
    """nvidia-ml-py, the driver's libnvidia-ml, the device nodes, and (optional) the kernel log for XID pids."""
    has_binding = importlib.util.find_spec("pynvml") is not None
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        lib_ok, lib_detail = True, "libnvidia-ml.so.1 loads"
    except OSError as exc:
        lib_ok, lib_detail = False, str(exc)
    has_dev = os.path.exists("/dev/nvidiactl")
    can_kmsg = os.access(kmsg_path, os.R_OK)
    return [
        Requirement("nvidia-ml-py", has_binding, "python module pynvml",
                    "pip install nvidia-ml-py (it is a gpusleuth dependency)"),
        Requirement("libnvidia-ml", lib_ok, lib_detail,
                    "install the NVIDIA driver; in a container use the NVIDIA container toolkit"),
        Requirement("/dev/nvidiactl", has_dev, "NVIDIA device nodes",
                    "load the NVIDIA kernel driver (nvidia-smi should list the GPUs)"),
        Requirement(f"{kmsg_path} readable (optional)", can_kmsg, "names the process of an XID",
                    "run the agent as root; without it XID events carry pid 0"),
    ]
