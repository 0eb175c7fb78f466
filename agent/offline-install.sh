#!/usr/bin/env bash
# Offline install of gpusleuth from a bundle made by `agent bundle DIR` (this file is DIR/install.sh).
#   sudo bash DIR/install.sh               install under /opt/gpusleuth (PREFIX=...) with the host's python3
#   sudo bash DIR/install.sh --uninstall   undo everything this script did
# Never writes over system files: packages are unpacked under PREFIX/root, Python packages under PREFIX/lib, and
# kernel headers are linked only where /lib/modules/$(uname -r)/build does not exist (links are recorded for undo).
# Environment: PREFIX (default /opt/gpusleuth), PYTHON (default python3: the one with torch on GPU hosts).
set -euo pipefail
bundle=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${PREFIX:-/opt/gpusleuth}
PYTHON=${PYTHON:-$(command -v python3)}
record="$PREFIX/created-links.txt"
log() { printf '[gpusleuth offline install] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "run as root: sudo bash $0" >&2
    exit 4
fi

if [ "${1:-}" = "--uninstall" ]; then
    if [ -f "$record" ]; then
        while read -r link; do
            [ -L "$link" ] && rm -f "$link" && log "removed $link"
            rmdir --ignore-fail-on-non-empty "$(dirname "$link")" 2>/dev/null || true
        done < "$record"
    fi
    rm -rf "$PREFIX"
    log "removed $PREFIX"
    exit 0
fi

[ -d "$bundle/debs" ] && [ -d "$bundle/wheels" ] || { echo "$bundle is not a gpusleuth bundle (no debs/ or wheels/)" >&2; exit 2; }
mkdir -p "$PREFIX/root" "$PREFIX/lib" "$PREFIX/bin" "$PREFIX/bcc-only"
touch "$record"

for deb in "$bundle"/debs/*.deb; do
    dpkg-deb -x "$deb" "$PREFIX/root"
done
log "unpacked $(ls "$bundle"/debs/*.deb | wc -l) packages under $PREFIX/root"

kernel=$(uname -r)
tree=$(ls -d "$PREFIX"/root/usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
if [ ! -e "/lib/modules/$kernel/build" ] && [ -n "$tree" ]; then
    mkdir -p "/lib/modules/$kernel"
    ln -s "$tree" "/lib/modules/$kernel/build" && echo "/lib/modules/$kernel/build" >> "$record"
    common=${tree%-amd64}-common
    if [ ! -e "/lib/modules/$kernel/source" ] && [ -d "$common" ]; then
        ln -s "$common" "/lib/modules/$kernel/source" && echo "/lib/modules/$kernel/source" >> "$record"
    fi
    log "linked kernel headers $tree (the running kernel had none)"
else
    log "kept the existing /lib/modules/$kernel/build"
fi

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$PREFIX/lib" "$bundle"/wheels/*.whl
ln -sfn "$PREFIX/root/usr/lib/python3/dist-packages/bcc" "$PREFIX/bcc-only/bcc"
[ -f "$bundle/nvtx/libgsnvtx.so" ] && install -m 0755 "$bundle/nvtx/libgsnvtx.so" "$PREFIX/lib/libgsnvtx.so"
libs="$PREFIX/root/usr/lib/x86_64-linux-gnu:$PREFIX/root/usr/lib/llvm-14/lib"
for tool in agent gpusleuth; do
    cat > "$PREFIX/bin/$tool" <<WRAP
#!/bin/sh
# gpusleuth from the offline bundle: bundled bcc libraries and Python packages first, the host's python3.
export LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PYTHONPATH="$PREFIX/lib:$PREFIX/bcc-only\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$PYTHON" -m gpusleuth.agent.cli.main "\$@"
WRAP
    chmod 755 "$PREFIX/bin/$tool"
done

if [ ! -e /sys/kernel/tracing/events ] && [ -d /sys/kernel/tracing ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || log "WARNING: could not mount tracefs"
fi
"$PREFIX/bin/agent" probes || true
log "done: $PREFIX/bin/agent start   (undo: sudo bash $0 --uninstall)"
