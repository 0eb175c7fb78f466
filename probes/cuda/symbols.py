"""Every function the cuda probe attaches to: its library, its family (what the BPF side does with it) and where its
arguments are. This table is the one definition: the loader gives each resolved name its index as the BPF
program's function id and fills the kernel's `fn_table` array from it (probe.py), and the decoder reads names back.

Argument positions are 0-based in the C signature; on x86-64 the first six integer arguments are in registers and
the rest on the stack (cuda.c: arg()). Names are tried with each suffix in `variants`: the driver exports per-thread
default-stream forms (`_ptsz`, `_ptds`) and versioned ABIs (`_v2`) beside the plain names.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass

NO_ARG = 15  # "this function has no such argument" in a position field


class Family(enum.IntEnum):
    """What the BPF side does on entry (and return). Numbers are shared with cuda.c."""

    LAUNCH = 1  # kernel launch: per-thread count; one event each only while launch tracing is on
    GRAPH = 2  # graph launch: per-thread count
    SYNC = 3  # host waits on the GPU: duration, and the host step it ends (launches since the previous sync)
    COPY = 4  # memcpy: bytes, direction, call time
    ALLOC = 5  # device allocation: bytes, failures (return code), the handle remembered for its free
    FREE = 6  # the bytes of the allocation it frees
    COLL = 7  # NCCL collective or p2p: count, bytes, call time per communicator; an event with its entry time
    GROUP = 8  # ncclGroupStart/End: count and call time
    COMM_INIT = 9  # ncclCommInitRank*: the communicator's rank, size and unique id
    GLOO_OP = 10  # c10d::ProcessGroupGloo collective entry: remembers which one, for GLOO_TAG
    GLOO_TAG = 11  # ProcessGroupGloo::getContext(tag): the collective's tag (same on every rank) and gloo rank/size

    @property
    def has_return(self) -> bool:
        """Families whose BPF side also runs when the call returns (duration, return code, out-arguments)."""
        return self not in (Family.LAUNCH, Family.GRAPH, Family.GLOO_OP)


class Direction(enum.IntEnum):
    """Copy direction; 0..4 are cudaMemcpyKind's values, so the runtime's `kind` argument is used as it is."""

    H2H = 0
    H2D = 1
    D2H = 2
    D2D = 3
    DEFAULT = 4  # unified addressing: the driver works it out from the pointers
    PEER = 5


class Layout(enum.IntEnum):
    """How a launch's grid is passed (for per-launch events)."""

    NONE = 0
    GRID = 1  # cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shmem, stream, ...)
    CONFIG = 2  # cuLaunchKernelEx(const CUlaunchConfig *config, f, ...)


@dataclass(frozen=True, slots=True)
class Fn:
    """One function (all its suffixed forms). Argument positions (NO_ARG when absent): `size` bytes or element
    count, `out` an out-pointer, `handle` the stream, event, pointer or communicator, `aux` the runtime's copy kind,
    the NCCL datatype or the rank, `aux2` the peer or nranks. For ALLOC/FREE, aux2 = 1 marks cuMemCreate handles."""

    name: str
    lib: str  # "driver", "runtime", "nccl", "gloo"
    family: Family
    variants: tuple[str, ...] = ("",)
    size: int = NO_ARG
    out: int = NO_ARG
    handle: int = NO_ARG
    aux: int = NO_ARG
    aux2: int = NO_ARG
    direction: Direction = Direction.DEFAULT  # fixed direction when `aux` is not the runtime's kind argument
    layout: Layout = Layout.NONE
    call: str = ""  # short label for exports: sync kind, copy API, collective op


PT = ("", "_ptsz")
PTDS = ("", "_ptds")
_D, _R, _N, _G = "driver", "runtime", "nccl", "gloo"
_F = Family
FUNCTIONS: tuple[Fn, ...] = (
    Fn("cuLaunchKernel", _D, _F.LAUNCH, PT, handle=8, layout=Layout.GRID),
    Fn("cuLaunchKernelEx", _D, _F.LAUNCH, PT, layout=Layout.CONFIG),
    Fn("cuLaunchCooperativeKernel", _D, _F.LAUNCH, PT, handle=8, layout=Layout.GRID),
    Fn("cuGraphLaunch", _D, _F.GRAPH, PT, handle=1),
    Fn("cuStreamSynchronize", _D, _F.SYNC, PT, handle=0, call="stream"),
    Fn("cuCtxSynchronize", _D, _F.SYNC, call="context"),
    Fn("cuEventSynchronize", _D, _F.SYNC, handle=0, call="event"),
    Fn("cuMemcpy", _D, _F.COPY, PTDS, size=2, call="cuMemcpy"),
    Fn("cuMemcpyAsync", _D, _F.COPY, PT, size=2, handle=3, call="cuMemcpyAsync"),
    Fn("cuMemcpyHtoD_v2", _D, _F.COPY, PTDS, size=2, direction=Direction.H2D, call="cuMemcpyHtoD"),
    Fn("cuMemcpyDtoH_v2", _D, _F.COPY, PTDS, size=2, direction=Direction.D2H, call="cuMemcpyDtoH"),
    Fn("cuMemcpyDtoD_v2", _D, _F.COPY, PTDS, size=2, direction=Direction.D2D, call="cuMemcpyDtoD"),
    Fn("cuMemcpyHtoDAsync_v2", _D, _F.COPY, PT, size=2, handle=3, direction=Direction.H2D, call="cuMemcpyHtoDAsync"),
    Fn("cuMemcpyDtoHAsync_v2", _D, _F.COPY, PT, size=2, handle=3, direction=Direction.D2H, call="cuMemcpyDtoHAsync"),
    Fn("cuMemcpyDtoDAsync_v2", _D, _F.COPY, PT, size=2, handle=3, direction=Direction.D2D, call="cuMemcpyDtoDAsync"),
    Fn("cuMemcpyPeer", _D, _F.COPY, PTDS, size=4, direction=Direction.PEER, call="cuMemcpyPeer"),
    Fn("cuMemcpyPeerAsync", _D, _F.COPY, PT, size=4, handle=5, direction=Direction.PEER, call="cuMemcpyPeerAsync"),
    Fn("cuMemAlloc_v2", _D, _F.ALLOC, size=1, out=0, call="cuMemAlloc"),
    Fn("cuMemAllocManaged", _D, _F.ALLOC, size=1, out=0, call="cuMemAllocManaged"),
    Fn("cuMemAllocAsync", _D, _F.ALLOC, PT, size=1, out=0, call="cuMemAllocAsync"),
    Fn("cuMemAllocFromPoolAsync", _D, _F.ALLOC, PT, size=1, out=0, call="cuMemAllocFromPoolAsync"),
    Fn("cuMemCreate", _D, _F.ALLOC, size=1, out=0, aux2=1, call="cuMemCreate"),  # aux2=1: a VMM handle, not a ptr
    Fn("cuMemFree_v2", _D, _F.FREE, handle=0, call="cuMemFree"),
    Fn("cuMemFreeAsync", _D, _F.FREE, PT, handle=0, call="cuMemFreeAsync"),
    Fn("cuMemRelease", _D, _F.FREE, handle=0, aux2=1, call="cuMemRelease"),
    # The runtime calls the driver: a runtime call and the driver call inside it are one call (the outermost
    # counts, cuda.c: enter()). Launches and graph launches are counted at the driver only (every runtime launch
    # reaches cuLaunchKernel / cuGraphLaunch, and so do cuBLAS's and Triton's direct driver launches).
    Fn("cudaStreamSynchronize", _R, _F.SYNC, PT, handle=0, call="stream"),
    Fn("cudaDeviceSynchronize", _R, _F.SYNC, call="device"),
    Fn("cudaEventSynchronize", _R, _F.SYNC, handle=0, call="event"),
    Fn("cudaMemcpy", _R, _F.COPY, PTDS, size=2, aux=3, call="cudaMemcpy"),
    Fn("cudaMemcpyAsync", _R, _F.COPY, PT, size=2, aux=3, handle=4, call="cudaMemcpyAsync"),
    Fn("cudaMemcpyPeer", _R, _F.COPY, size=4, direction=Direction.PEER, call="cudaMemcpyPeer"),
    Fn("cudaMemcpyPeerAsync", _R, _F.COPY, PT, size=4, handle=5, direction=Direction.PEER,
       call="cudaMemcpyPeerAsync"),
    Fn("cudaMalloc", _R, _F.ALLOC, size=1, out=0, call="cudaMalloc"),
    Fn("cudaMallocAsync", _R, _F.ALLOC, PT, size=1, out=0, call="cudaMallocAsync"),
    Fn("cudaMallocManaged", _R, _F.ALLOC, size=1, out=0, call="cudaMallocManaged"),
    Fn("cudaFree", _R, _F.FREE, handle=0, call="cudaFree"),
    Fn("cudaFreeAsync", _R, _F.FREE, PT, handle=0, call="cudaFreeAsync"),
    # NCCL: size = element count, aux = datatype (bytes = count * size of the type), handle = the communicator.
    Fn("ncclAllReduce", _N, _F.COLL, size=2, aux=3, handle=5, call="all_reduce"),
    Fn("ncclBroadcast", _N, _F.COLL, size=2, aux=3, handle=5, call="broadcast"),
    Fn("ncclReduce", _N, _F.COLL, size=2, aux=3, handle=6, call="reduce"),
    Fn("ncclAllGather", _N, _F.COLL, size=2, aux=3, handle=4, call="all_gather"),
    Fn("ncclReduceScatter", _N, _F.COLL, size=2, aux=3, handle=5, call="reduce_scatter"),
    Fn("ncclAlltoAll", _N, _F.COLL, size=2, aux=3, handle=4, call="all_to_all"),
    Fn("ncclSend", _N, _F.COLL, size=1, aux=2, aux2=3, handle=4, call="send"),
    Fn("ncclRecv", _N, _F.COLL, size=1, aux=2, aux2=3, handle=4, call="recv"),
    Fn("ncclGroupStart", _N, _F.GROUP, call="group_start"),
    Fn("ncclGroupEnd", _N, _F.GROUP, call="group_end"),
    # (comm*, nranks, ncclUniqueId by value: 128 bytes on the stack, rank): the id is read from the stack.
    Fn("ncclCommInitRank", _N, _F.COMM_INIT, out=0, aux2=1, aux=2, call="init"),
    Fn("ncclCommInitRankConfig", _N, _F.COMM_INIT, out=0, aux2=1, aux=2, call="init"),
)

# c10d::ProcessGroupGloo (libtorch_cpu.so) by mangled-name prefix: the prefix holds namespace, class and method
# (`_ZN4c10d16ProcessGroupGloo9allreduceE`), the rest is the signature, which changes between torch versions.
GLOO_CLASS = "_ZN4c10d16ProcessGroupGloo"
GLOO_OPS = ("allreduce", "allgather", "_allgather_base", "broadcast", "reduce_scatter", "_reduce_scatter_base",
            "allreduce_coalesced", "reduce", "gather", "scatter", "alltoall_base", "barrier", "send", "recv")
# getContext(uint32_t tag) returns a std::shared_ptr by value, so on x86-64 the hidden return slot comes first:
# (sret, this, tag). The tag is the ProcessGroup's collective counter: equal on every rank for the same collective.
GLOO_TAG_SYMBOL = f"{GLOO_CLASS}10getContextEj"
GLOO_FUNCTIONS: tuple[Fn, ...] = tuple(
    Fn(f"{GLOO_CLASS}{len(op)}{op}E", _G, _F.GLOO_OP, call=op) for op in GLOO_OPS
) + (Fn(GLOO_TAG_SYMBOL, _G, _F.GLOO_TAG, out=0, handle=1, aux=2, call="tag"),)

ALL_FUNCTIONS: tuple[Fn, ...] = FUNCTIONS + GLOO_FUNCTIONS
FN_IDS: dict[str, int] = {f.name: i for i, f in enumerate(ALL_FUNCTIONS)}


def symbol_names(fn: Fn) -> list[str]:
    """The exact symbol names tried for `fn` (gloo methods are prefixes: see `matches`)."""
    return [fn.name + v for v in fn.variants]


def matches(fn: Fn, symbol: str) -> bool:
    """True when `symbol` is one of `fn`'s forms (gloo: a mangled name with `fn.name` as its prefix)."""
    if fn.lib == "gloo" and fn.family is Family.GLOO_OP:
        return symbol.startswith(fn.name)
    return symbol in symbol_names(fn)


def symbol_regex(lib: str) -> str:
    """One regular expression for every candidate symbol of `lib` (a single pass over its symbol table)."""
    fns = [f for f in ALL_FUNCTIONS if f.lib == lib]
    if lib == "gloo":
        return "^(" + "|".join(re.escape(f.name) + (".*" if f.family is Family.GLOO_OP else "$") for f in fns) + ")"
    return "^(" + "|".join(re.escape(n) for f in fns for n in symbol_names(f)) + ")$"


# NCCL's ncclDataType_t -> bytes per element (ncclInt8 .. ncclFloat8e5m2), as cuda.c's dtype_size() has them.
NCCL_DTYPE_BYTES = (1, 1, 4, 4, 8, 8, 2, 4, 8, 2, 1, 1)
