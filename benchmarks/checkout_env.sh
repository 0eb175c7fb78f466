# Source this to make `gpusleuth` importable from this checkout without installing it (the GPU hosts run an
# uninstalled checkout: no network, nothing pip-installed). The repository root is the package, so one link named
# `gpusleuth` pointing at the root, on PYTHONPATH, is enough. Wheels carried in .whl/ (packages the host lacks, such
# as prometheus_client; gpu_session.sh's header says how to fetch them) are installed under the same temp folder,
# also on PYTHONPATH. gpu_session.sh sources it; by hand:
#   source benchmarks/checkout_env.sh && python3 benchmarks/stack_check.py --expect-gpus 8
# Environment: PYTHON (default python3) installs the wheels; TMPDIR (default /tmp) holds the link and the wheels.
_gs_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# One folder per user and checkout, so two checkouts on one host never retarget each other's link.
_gs_tmp=${TMPDIR:-/tmp}/gpusleuth-$(id -u)-$(printf %s "$_gs_root" | cksum | cut -d' ' -f1)
mkdir -p "$_gs_tmp/src"
ln -sfn "$_gs_root" "$_gs_tmp/src/gpusleuth"
export PYTHONPATH="$_gs_tmp/src${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G "$_gs_root/.whl/*.whl" >/dev/null; then
    if PIP_ROOT_USER_ACTION=ignore "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --disable-pip-version-check --upgrade --target "$_gs_tmp/site" "$_gs_root"/.whl/*.whl; then
        export PYTHONPATH="$_gs_tmp/site:$PYTHONPATH"
    else
        echo "checkout_env.sh: could not install the wheels in $_gs_root/.whl" >&2
    fi
fi
unset _gs_root _gs_tmp
