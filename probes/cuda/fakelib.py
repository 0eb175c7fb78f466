"""A hardware-boundary fake for checking the cuda probe where there is no GPU (CI, the CPU box): fake_cuda.c built
with gcc into libcuda.so.1, libcudart.so.13, libnccl.so.2 (the real names, signatures and symbol forms) and
libfakeapp.so (loops that call them through the PLT), and a process that loads them and makes the calls it is
told to, so a test knows exactly how many calls of each kind were made.

`FakeCudaProcess` runs `python -m gpusleuth.probes.cuda.fakelib DIR`: it loads the libraries with ctypes and reads
one JSON command per line on stdin ({"call": name, "args": [...], "times": n} or {"loop": name, "n": n,
"threads": t}), answering one JSON line per command with the wall time the calls took.
"""
from __future__ import annotations

import ctypes
import glob
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).with_name("fake_cuda.c")
LIBRARIES = {  # file name -> (-D flag, libraries it links against)
    "libcuda.so.1": ("FAKE_DRIVER", []),
    "libcudart.so.13": ("FAKE_RUNTIME", ["libcuda.so.1"]),
    "libnccl.so.2": ("FAKE_NCCL", []),
    "libfakeapp.so": ("FAKE_APP", ["libcuda.so.1"]),
}


def build(directory: Path, cflags: tuple[str, ...] = ("-O2",)) -> Path:
    """Compile the fake libraries into `directory` (made if needed); returns it. Needs gcc.

    `cflags` choose the functions' first instruction, which decides the uprobe's cost: -O2 gives `xor eax, eax`
    (single-stepped by the kernel), -O0 gives `push rbp` (emulated by the kernel, no single step)."""
    versioned = sorted(glob.glob("/usr/bin/gcc-[0-9]*"))  # what linux-headers-* pulls in (gcc-12 on Debian 12)
    gcc = shutil.which("gcc") or shutil.which("cc") or (versioned[-1] if versioned else None)
    if gcc is None:
        raise RuntimeError("gcc not found: the fake CUDA libraries are built from C (apt-get install gcc)")
    directory.mkdir(parents=True, exist_ok=True)
    for name, (flag, links) in LIBRARIES.items():
        cmd = [gcc, "-shared", "-fPIC", *cflags, f"-D{flag}", f"-Wl,-soname,{name}", "-o", str(directory / name),
               str(SOURCE), "-Wl,-rpath,$ORIGIN", f"-L{directory}", *[f"-l:{lib}" for lib in links]]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    return directory


class FakeCudaProcess:
    """A child process holding the fake libraries, making calls on request (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gpusleuth.probes.cuda.fakelib", str(directory)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "ready", "the fake CUDA process did not start"
        self.pid = self.proc.pid

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def call(self, name: str, *args: Any, times: int = 1) -> dict[str, Any]:
        """Call `name(*args)` `times` times; ints are passed as 64-bit, ["buf", n] as a fresh n-byte buffer,
        ["out"] as a pointer to a fresh 8-byte slot (the answer's "outs" lists what the calls wrote there), ["id", k]
        as a 128-byte ncclUniqueId by value (bytes k, k+1, ..., mod 256; k = 0 if left out). The answer has the return codes ("results")
        and each call's wall time ("each_ns")."""
        return self._ask({"call": name, "args": list(args), "times": times})

    def loop(self, name: str, n: int, threads: int = 1, *extra: int) -> dict[str, Any]:
        """libfakeapp's `name(n, *extra)` on each of `threads` threads at once (n library calls each)."""
        return self._ask({"loop": name, "n": n, "threads": threads, "extra": list(extra)})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "FakeCudaProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _UniqueId(ctypes.Structure):
    _fields_ = [("internal", ctypes.c_ubyte * 128)]


def _arg(spec: Any, keep: list) -> Any:
    if isinstance(spec, list) and spec and spec[0] == "buf":
        buf = ctypes.create_string_buffer(int(spec[1]))
        keep.append(buf)
        return ctypes.c_void_p(ctypes.addressof(buf))
    if isinstance(spec, list) and spec == ["out"]:
        slot = ctypes.c_uint64(0)
        keep.append(slot)
        return ctypes.byref(slot)
    if isinstance(spec, list) and spec and spec[0] == "id":
        first = int(spec[1]) if len(spec) > 1 else 0
        return _UniqueId((ctypes.c_ubyte * 128)(*[(first + i) % 256 for i in range(128)]))
    return ctypes.c_uint64(int(spec))


def _serve(directory: Path) -> None:
    libs = [ctypes.CDLL(str(directory / name)) for name in LIBRARIES]
    app = libs[-1]
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        t0 = time.perf_counter_ns()
        if "loop" in cmd:
            fn = getattr(app, cmd["loop"])
            fn.restype = ctypes.c_long
            args = [ctypes.c_long(cmd["n"]), *[ctypes.c_long(x) for x in cmd["extra"]]]
            workers = [threading.Thread(target=fn, args=args) for _ in range(cmd["threads"])]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            out = {"ns": time.perf_counter_ns() - t0}
        else:
            fn = next(getattr(lib, cmd["call"]) for lib in libs if hasattr(lib, cmd["call"]))
            keep: list = []
            results, each = [], []
            for _ in range(cmd["times"]):
                args = [_arg(a, keep) for a in cmd["args"]]
                t1 = time.perf_counter_ns()
                results.append(fn(*args))
                each.append(time.perf_counter_ns() - t1)
            outs = [k.value for k in keep if isinstance(k, ctypes.c_uint64)]
            out = {"ns": time.perf_counter_ns() - t0, "each_ns": each, "results": results, "outs": outs}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]))
