#!/bin/sh
# install.sh OUT TRITON BIN: installs build.sh's OUT into a Triton install.
#
#   TRITON/backends/rustpy/{libtriton_rustpy.so,rustpy-worker,BUILD_INFO}
#   BIN/rustpy
#
# then checks that the loader resolves every library the backend needs there
# (libtritonserver.so through TRITON/lib, libpython from the image), gives the
# Python named in BUILD_INFO numpy if it has none, and with
# RUSTPY_AS_PYTHON=true makes rustpy the `python` backend too
# (backends/python/libtriton_python.so -> rustpy; the official library is kept
# as libtriton_python.so.official). Run by both Dockerfiles and by CI
# (tests/e2e/test_deploy.py, on a Triton install laid out like the image's).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

out="${1:?usage: install.sh OUT TRITON BIN}"
triton="${2:?usage: install.sh OUT TRITON BIN}"
bin="${3:?usage: install.sh OUT TRITON BIN}"

dest="$triton/backends/rustpy"
mkdir -p "$dest" "$bin"
cp "$out/libtriton_rustpy.so" "$out/rustpy-worker" "$out/BUILD_INFO" "$dest/"
cp "$out/rustpy" "$bin/rustpy"
chmod 0755 "$dest/libtriton_rustpy.so" "$dest/rustpy-worker" "$bin/rustpy"

# Fail the build, not the first pod, if a needed library cannot be found. The
# server's own libraries are looked up where the server finds them (the
# nvidia-pytriton wheel's carry no search path of their own: its tritonserver
# binary's RPATH supplies it).
server_lib="$(readlink -f "$triton/lib/libtritonserver.so")" \
    || die "no $triton/lib/libtritonserver.so"
[ -f "$server_lib" ] || die "no $triton/lib/libtritonserver.so"
if LD_LIBRARY_PATH="$(dirname "$server_lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ldd "$dest/libtriton_rustpy.so" | grep 'not found' >&2; then
    die "$dest/libtriton_rustpy.so: the libraries above are missing in this image"
fi

python="$(sed -n 's/^python_executable=//p' "$dest/BUILD_INFO")"
[ -n "$python" ] || die "no python_executable in $dest/BUILD_INFO"
if ! "$python" -c 'import numpy' 2>/dev/null; then
    log "$python has no numpy: installing it"
    PIP_BREAK_SYSTEM_PACKAGES=1 "$python" -m pip install --no-cache-dir 'numpy>=1.23'
fi

if [ "${RUSTPY_AS_PYTHON:-false}" = "true" ]; then
    pyb="$triton/backends/python"
    mv "$pyb/libtriton_python.so" "$pyb/libtriton_python.so.official"
    ln -s "$dest/libtriton_rustpy.so" "$pyb/libtriton_python.so"
    log "rustpy is also the python backend ($pyb/libtriton_python.so)"
fi
log "installed into $dest and $bin/rustpy"
