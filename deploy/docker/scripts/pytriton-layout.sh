#!/bin/sh
# pytriton-layout.sh TRITON PYVER: turns the tritonserver tree unpacked from
# the nvidia-pytriton wheel (TRITON = .../pytriton/tritonserver) into a Triton
# install's layout:
#
#   TRITON/backends/python/triton_python_backend_stub   the official backend's
#       stub for Python PYVER (the wheel ships one per version)
#   TRITON/lib/libtritonserver.so -> the wheel's libtritonserver-<hash>.so
#       (auditwheel's name): backends name libtritonserver.so as a needed
#       library, and hosts such as perf_analyzer's C API mode open
#       <triton>/lib/libtritonserver.so
#
# Idempotent. Run by Dockerfile.cpu and by ci/install.sh.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

ts="${1:?usage: pytriton-layout.sh TRITON PYVER}"
pyver="${2:?usage: pytriton-layout.sh TRITON PYVER}"

stub="$ts/backends/python/triton_python_backend_stub"
if [ ! -x "$stub" ]; then
    [ -f "$ts/python_backend_stubs/$pyver/triton_python_backend_stub" ] \
        || die "the wheel has no python backend stub for Python $pyver"
    cp "$ts/python_backend_stubs/$pyver/triton_python_backend_stub" "$stub"
    chmod +x "$stub"
fi
chmod +x "$ts/bin/tritonserver"
find "$ts" "$ts/../../nvidia_pytriton.libs" -name '*.so*' -exec chmod +x {} +

if [ ! -e "$ts/lib/libtritonserver.so" ]; then
    real=""
    for f in "$ts/../../nvidia_pytriton.libs"/libtritonserver-*.so; do
        [ -f "$f" ] && real="$(basename "$f")" && break
    done
    [ -n "$real" ] || die "no libtritonserver-*.so in the wheel's nvidia_pytriton.libs"
    mkdir -p "$ts/lib"
    ln -sfn "../../../nvidia_pytriton.libs/$real" "$ts/lib/libtritonserver.so"
fi
log "$ts laid out as a Triton install (lib/libtritonserver.so, Python $pyver stub)"
