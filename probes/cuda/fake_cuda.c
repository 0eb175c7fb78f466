// A hardware-boundary fake of the CUDA driver (libcuda.so.1), the CUDA runtime (libcudart.so.13), NCCL
// (libnccl.so.2) and a small "application" library calling them through the PLT, for checking the cuda probe on
// hosts with no GPU. It exports the real names and signatures (x86-64 SysV ABI: the probe reads arguments from the
// same registers and stack slots as on the real libraries), including the versioned forms (_v2, _ptsz, _ptds) and an
// alias at one address (pncclAllReduce), and does no GPU work: syncs sleep for fake_set_wait_ns(), copies copy host
// memory, allocations hand out addresses from a counter and fail above fake_set_alloc_limit(). As in the real
// runtime, each cuda* function calls its cu* counterpart, so the probe's nesting rule (count the outermost call of
// a family once) is exercised. Built by probes/cuda/fakelib.py with one of -DFAKE_DRIVER, -DFAKE_RUNTIME,
// -DFAKE_NCCL, -DFAKE_APP.
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>

#define API __attribute__((visibility("default"), noinline))
typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUstream, *CUfunction, *CUevent, *CUgraphExec, *CUcontext;
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct {
    unsigned gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes;
    CUstream hStream;
    void *attrs;
    unsigned numAttrs;
} CUlaunchConfig;
typedef struct { unsigned x, y, z; } dim3;
typedef struct { char internal[128]; } ncclUniqueId;
typedef struct { int rank, nranks; } fake_comm;
typedef void *ncclComm_t;

#ifdef FAKE_DRIVER
static long long wait_ns = 0;
static unsigned long long alloc_limit = ~0ULL, next_addr = 0x7f0000000000ULL, next_handle = 1;

API void fake_set_wait_ns(long long ns) { wait_ns = ns; }
API void fake_set_alloc_limit(unsigned long long bytes) { alloc_limit = bytes; }

static void fake_wait(void) {
    if (wait_ns <= 0)
        return;
    struct timespec ts = {wait_ns / 1000000000LL, wait_ns % 1000000000LL};
    nanosleep(&ts, NULL);
}

static CUresult fake_copy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
    if (dst && src)
        memcpy((void *)dst, (const void *)src, n);
    return 0;
}

#define LAUNCH(name) API CUresult name(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, \
    unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params, void **extra) { return 0; }
LAUNCH(cuLaunchKernel)
LAUNCH(cuLaunchKernel_ptsz)
API CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) { return 0; }
API CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **p, void **e) { return 0; }
API CUresult cuGraphLaunch(CUgraphExec g, CUstream s) { return 0; }
API CUresult cuGraphLaunch_ptsz(CUgraphExec g, CUstream s) { return 0; }

API CUresult cuStreamSynchronize(CUstream s) { fake_wait(); return 0; }
API CUresult cuStreamSynchronize_ptsz(CUstream s) { fake_wait(); return 0; }
API CUresult cuCtxSynchronize(void) { fake_wait(); return 0; }
API CUresult cuEventSynchronize(CUevent e) { fake_wait(); return 0; }

#define COPY(name) API CUresult name(CUdeviceptr d, CUdeviceptr s, size_t n) { return fake_copy(d, s, n); }
#define COPY_ASYNC(name) API CUresult name(CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st) { \
    return fake_copy(d, s, n); }
COPY(cuMemcpy)
COPY(cuMemcpyHtoD_v2)
COPY(cuMemcpyHtoD_v2_ptds)
COPY(cuMemcpyDtoH_v2)
COPY(cuMemcpyDtoD_v2)
COPY_ASYNC(cuMemcpyAsync)
COPY_ASYNC(cuMemcpyAsync_ptsz)
COPY_ASYNC(cuMemcpyHtoDAsync_v2)
COPY_ASYNC(cuMemcpyDtoHAsync_v2)
API CUresult cuMemcpyPeer(CUdeviceptr d, CUcontext dc, CUdeviceptr s, CUcontext sc, size_t n) {
    return fake_copy(d, s, n);
}

API CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t n) {
    if (n > alloc_limit)
        return 2;  // CUDA_ERROR_OUT_OF_MEMORY
    *p = next_addr;
    next_addr += (n + 0xfff) & ~0xfffULL;
    return 0;
}
API CUresult cuMemAllocAsync(CUdeviceptr *p, size_t n, CUstream s) { return cuMemAlloc_v2(p, n); }
API CUresult cuMemFree_v2(CUdeviceptr p) { return 0; }
API CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s) { return 0; }
API CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t n, const void *prop, unsigned long long fl) {
    if (n > alloc_limit)
        return 2;
    *h = next_handle++;
    return 0;
}
API CUresult cuMemRelease(CUmemGenericAllocationHandle h) { return 0; }
#endif

#ifdef FAKE_RUNTIME
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void **, void **);
CUresult cuGraphLaunch(CUgraphExec, CUstream);
CUresult cuStreamSynchronize(CUstream);
CUresult cuCtxSynchronize(void);
CUresult cuEventSynchronize(CUevent);
CUresult cuMemcpy(CUdeviceptr, CUdeviceptr, size_t);
CUresult cuMemcpyHtoD_v2(CUdeviceptr, CUdeviceptr, size_t);
CUresult cuMemcpyDtoH_v2(CUdeviceptr, CUdeviceptr, size_t);
CUresult cuMemcpyAsync(CUdeviceptr, CUdeviceptr, size_t, CUstream);
CUresult cuMemAlloc_v2(CUdeviceptr *, size_t);
CUresult cuMemFree_v2(CUdeviceptr);

API int cudaLaunchKernel(const void *f, dim3 grid, dim3 block, void **args, size_t shmem, CUstream s) {
    return cuLaunchKernel((CUfunction)f, grid.x, grid.y, grid.z, block.x, block.y, block.z, shmem, s, args, 0);
}
API int cudaGraphLaunch(CUgraphExec g, CUstream s) { return cuGraphLaunch(g, s); }
API int cudaStreamSynchronize(CUstream s) { return cuStreamSynchronize(s); }
API int cudaDeviceSynchronize(void) { return cuCtxSynchronize(); }
API int cudaEventSynchronize(CUevent e) { return cuEventSynchronize(e); }
API int cudaMemcpy(void *d, const void *s, size_t n, int kind) {
    if (kind == 1)
        return cuMemcpyHtoD_v2((CUdeviceptr)d, (CUdeviceptr)s, n);
    if (kind == 2)
        return cuMemcpyDtoH_v2((CUdeviceptr)d, (CUdeviceptr)s, n);
    return cuMemcpy((CUdeviceptr)d, (CUdeviceptr)s, n);
}
API int cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, CUstream st) {
    return cuMemcpyAsync((CUdeviceptr)d, (CUdeviceptr)s, n, st);
}
API int cudaMalloc(void **p, size_t n) { return cuMemAlloc_v2((CUdeviceptr *)p, n); }
API int cudaFree(void *p) { return cuMemFree_v2((CUdeviceptr)p); }
#endif

#ifdef FAKE_NCCL
API int ncclGetUniqueId(ncclUniqueId *id) {
    for (int i = 0; i < 128; i++)
        id->internal[i] = (char)rand();
    return 0;
}
static int init_comm(ncclComm_t *comm, int nranks, int rank) {
    fake_comm *c = malloc(sizeof(*c));
    c->rank = rank;
    c->nranks = nranks;
    *comm = c;
    return 0;
}
API int ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    return init_comm(comm, nranks, rank);
}
API int ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank, void *config) {
    return init_comm(comm, nranks, rank);
}
API int ncclAllReduce(const void *s, void *r, size_t count, int dtype, int op, ncclComm_t comm, CUstream st) {
    return 0;
}
int pncclAllReduce(const void *, void *, size_t, int, int, ncclComm_t, CUstream)
    __attribute__((alias("ncclAllReduce"), visibility("default")));
API int ncclAllGather(const void *s, void *r, size_t count, int dtype, ncclComm_t comm, CUstream st) { return 0; }
API int ncclReduceScatter(const void *s, void *r, size_t count, int dtype, int op, ncclComm_t comm, CUstream st) {
    return 0;
}
API int ncclBroadcast(const void *s, void *r, size_t count, int dtype, int root, ncclComm_t comm, CUstream st) {
    return 0;
}
API int ncclReduce(const void *s, void *r, size_t count, int dtype, int op, int root, ncclComm_t comm,
                   CUstream st) {
    return 0;
}
API int ncclSend(const void *s, size_t count, int dtype, int peer, ncclComm_t comm, CUstream st) { return 0; }
API int ncclRecv(void *r, size_t count, int dtype, int peer, ncclComm_t comm, CUstream st) { return 0; }
API int ncclGroupStart(void) { return 0; }
API int ncclGroupEnd(void) { return 0; }
#endif

#ifdef FAKE_APP
// Loops that call the fake libraries through the PLT, as an application does: the per-hit cost benchmark and the
// many-threads tests call these (one ctypes call, n library calls).
CUresult cuLaunchKernel(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                        void **, void **);
CUresult cuLaunchKernelEx(const CUlaunchConfig *, CUfunction, void **, void **);
CUresult cuStreamSynchronize(CUstream);
API long app_launch_loop(long n) {
    for (long i = 0; i < n; i++)
        cuLaunchKernel((CUfunction)0x1000, 4, 2, 1, 128, 1, 1, 0, (CUstream)0x77, 0, 0);
    return n;
}
API long app_launch_ex_loop(long n) {
    CUlaunchConfig c = {8, 4, 2, 256, 2, 1, 1024, (CUstream)0x78, 0, 0};
    for (long i = 0; i < n; i++)
        cuLaunchKernelEx(&c, (CUfunction)0x2000, 0, 0);
    return n;
}
// One "step": n launches, then a sync (what an eager decode step does).
API long app_steps(long steps, long launches) {
    for (long s = 0; s < steps; s++) {
        app_launch_loop(launches);
        cuStreamSynchronize((CUstream)0x77);
    }
    return steps;
}
#endif
