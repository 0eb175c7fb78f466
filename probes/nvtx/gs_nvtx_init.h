/* gs_nvtx.c, part 3: the injection entry point NVTX calls once per NVTX copy in the process (each library that
 * embeds the header-only NVTX has its own function table; every one gets these handlers). */

static void setup(void) {
    const char *path = getenv("GPUSLEUTH_NVTX_SOCKET");
    if (!path || !*path) path = "/run/gpusleuth/nvtx.sock";
    pthread_key_create(&thread_key, ring_free);
    pid = getpid();
    sock_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sock_addr.sun_family = AF_UNIX;
    strncpy(sock_addr.sun_path, path, sizeof sock_addr.sun_path - 1);
    pthread_atfork(NULL, NULL, after_fork_child);
}

static void set_slot(NvtxFunctionTable table, unsigned int size, unsigned int id, NvtxFunctionPointer fn) {
    if (id < size && table[id]) *table[id] = fn;
}

#define SLOT(table, size, id, fn) set_slot(table, size, id, (NvtxFunctionPointer)(fn))

NVTX_DYNAMIC_EXPORT int InitializeInjectionNvtx2(NvtxGetExportTableFunc_t getExportTable) {
    const NvtxExportTableCallbacks *cb = (const NvtxExportTableCallbacks *)getExportTable(NVTX_ETID_CALLBACKS);
    NvtxFunctionTable t;
    unsigned int n;
    if (!cb || cb->struct_size < sizeof *cb) return 0;
    pthread_once(&once, setup);
    if (sock_fd < 0) return 0;
    if (!cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &t, &n)) return 0;
    SLOT(t, n, NVTX_CBID_CORE_MarkEx, p_MarkEx);
    SLOT(t, n, NVTX_CBID_CORE_MarkA, p_MarkA);
    SLOT(t, n, NVTX_CBID_CORE_MarkW, p_MarkW);
    SLOT(t, n, NVTX_CBID_CORE_RangeStartEx, p_StartEx);
    SLOT(t, n, NVTX_CBID_CORE_RangeStartA, p_StartA);
    SLOT(t, n, NVTX_CBID_CORE_RangeStartW, p_StartW);
    SLOT(t, n, NVTX_CBID_CORE_RangeEnd, p_End);
    SLOT(t, n, NVTX_CBID_CORE_RangePushEx, p_PushEx);
    SLOT(t, n, NVTX_CBID_CORE_RangePushA, p_PushA);
    SLOT(t, n, NVTX_CBID_CORE_RangePushW, p_PushW);
    SLOT(t, n, NVTX_CBID_CORE_RangePop, p_Pop);
    if (cb->GetModuleFunctionTable(NVTX_CB_MODULE_CORE2, &t, &n)) {
        SLOT(t, n, NVTX_CBID_CORE2_DomainMarkEx, p_DMarkEx);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRangeStartEx, p_DStartEx);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRangeEnd, p_DEnd);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRangePushEx, p_DPushEx);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRangePop, p_DPop);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRegisterStringA, p_RegisterStringA);
        SLOT(t, n, NVTX_CBID_CORE2_DomainRegisterStringW, p_RegisterStringW);
        SLOT(t, n, NVTX_CBID_CORE2_DomainCreateA, p_DomainCreateA);
        SLOT(t, n, NVTX_CBID_CORE2_DomainCreateW, p_DomainCreateW);
        SLOT(t, n, NVTX_CBID_CORE2_DomainDestroy, p_DomainDestroy);
    }
    return 1;
}
