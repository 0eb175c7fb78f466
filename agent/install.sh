#!/usr/bin/env bash
# Install everything gpusleuth needs on a Debian 12 / Ubuntu 22.04+ host, as root, idempotently:
# OS packages (bcc, bpftool, kernel headers, iproute2, prometheus and its alertmanager, tmux), a kernel header link
# where the running kernel has none, tracefs, and a virtual environment at ./.venv with the project (engine + test
# extras) installed.
#   sudo bash agent/install.sh            # everything
#   GPUSLEUTH_EXTRAS=engine sudo bash agent/install.sh
# Environment: PYTHON (default /usr/bin/python3), VENV (default ./.venv), TORCH_SPEC (default torch==2.13.0),
# GPUSLEUTH_EXTRAS (default engine,test), GPUSLEUTH_SKIP_APT=1 to skip apt.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
PYTHON=${PYTHON:-/usr/bin/python3}
VENV=${VENV:-$here/.venv}
EXTRAS=${GPUSLEUTH_EXTRAS:-engine,test}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
log() { printf '[install] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "install.sh must run as root (it installs OS packages and links kernel headers): sudo bash agent/install.sh" >&2
    exit 4
fi

kernel=$(uname -r)
if [ "${GPUSLEUTH_SKIP_APT:-0}" != 1 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    pkgs=(python3 python3-venv python3-bpfcc bpfcc-tools bpftool iproute2 prometheus prometheus-alertmanager tmux procps
          iputils-ping kmod gcc)  # gcc: the tests build small C programs and the fake CUDA libraries
    missing=()
    for p in "${pkgs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
    # Exact headers for the running kernel if the distribution has them; otherwise the distribution's generic
    # header package, linked below (tracepoint programs read only tracepoint arguments, so close headers suffice).
    if [ ! -e "/lib/modules/$kernel/build" ]; then
        apt-get update -qq
        if apt-cache show "linux-headers-$kernel" >/dev/null 2>&1; then missing+=("linux-headers-$kernel")
        elif apt-cache show linux-headers-amd64 >/dev/null 2>&1; then missing+=(linux-headers-amd64)
        else missing+=(linux-headers-generic); fi
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# Kernel headers: link a packaged tree only where the running kernel has none; never replace an existing link.
if [ ! -e "/lib/modules/$kernel/build" ]; then
    tree=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-generic 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$tree" ]; then
        common=${tree%-amd64}; common=${common%-generic}-common
        mkdir -p "/lib/modules/$kernel"
        ln -s "$tree" "/lib/modules/$kernel/build"
        if [ -d "$common" ] && [ ! -e "/lib/modules/$kernel/source" ]; then ln -s "$common" "/lib/modules/$kernel/source"; fi
        log "linked kernel headers $tree -> /lib/modules/$kernel/build"
    else
        log "WARNING: no kernel headers found; eBPF probes will report 'unavailable' (see README, Troubleshooting)"
    fi
fi

# tracefs: bcc attaches tracepoints through it.
if [ ! -e /sys/kernel/tracing/events ] && [ -d /sys/kernel/tracing ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || log "WARNING: could not mount tracefs"
fi
if [ -d /sys/kernel/debug ] && [ ! -e /sys/kernel/debug/tracing ]; then
    mount -t debugfs nodev /sys/kernel/debug 2>/dev/null || true
fi

# Virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# Expose only the OS's bcc binding, not every system package (a .pth naming a folder with one link in it).
bccdir=$(ls -d /usr/lib/python3/dist-packages/bcc 2>/dev/null || true)
if [ -n "$bccdir" ]; then
    mkdir -p "$VENV/os-bcc"
    ln -sfn "$bccdir" "$VENV/os-bcc/bcc"
    echo "$VENV/os-bcc" > "$site/gpusleuth-os-bcc.pth"
fi

"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if [[ ",$EXTRAS," == *",engine,"* ]] && ! "$py" -c 'import torch' 2>/dev/null; then
    log "pip install $TORCH_SPEC"
    "$py" -m pip install -q "$TORCH_SPEC"
fi
log "pip install -e .[$EXTRAS]"
"$py" -m pip install -q -e ".[$EXTRAS]"
# The NVTX injection library engines can load (NVTX_INJECTION64_PATH): gcc + the nvtx3 headers (nvidia-nvtx, a
# test dependency, or a CUDA toolkit); it lands in probes/nvtx/build/ (ignored by git).
if nvtx_lib=$("$py" -m gpusleuth.probes.nvtx.build 2>"$VENV/nvtx-build.log"); then
    log "built the NVTX injection library $nvtx_lib"
else
    log "WARNING: NVTX injection library not built ($(tail -n 1 "$VENV/nvtx-build.log")); the nvtx probe runs without it"
fi
log "done: $VENV/bin/agent"
