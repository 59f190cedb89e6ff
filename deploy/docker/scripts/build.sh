#!/bin/sh
# build.sh OUT: builds what the images ship, for the Python that will serve.
#
#   OUT/libtriton_rustpy.so   the backend, linked against $PYO3_PYTHON's libpython
#   OUT/rustpy-worker         the process-isolation worker
#   OUT/rustpy                the CLI
#   OUT/BUILD_INFO            python=X.Y.Z, python_executable=..., rustc=...
#
# PYO3_PYTHON defaults to the image's `python3` (never a hard-coded version).
# `cargo build --locked`: a Cargo.lock out of step with Cargo.toml stops the
# build. The whole workspace is built (the load generators too, which the
# images do not ship): CI builds with this very script (ci/test.sh), and the
# same package set keeps cargo's feature resolution, hence its artifacts, the
# same for both.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

out="${1:?usage: build.sh OUT}"
root="$(cd "$here/../../.." && pwd)"
cd "$root"

required="$(workspace_rust_version "$root")"
have="$(rustc --version | awk '{print $2}')"
version_ge "$have" "$required" \
    || die "rustc $have is older than the workspace's rust-version $required (Cargo.toml)"

PYO3_PYTHON="${PYO3_PYTHON:-$(command -v python3)}"
export PYO3_PYTHON
"$PYO3_PYTHON" -c 'import sys; print("rustpy: building for Python %d.%d (%s)" % (sys.version_info[0], sys.version_info[1], sys.executable))' >&2

cargo build --release --locked --workspace

target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$out"
cp "$target/release/libtriton_rustpy.so" "$target/release/rustpy-worker" "$target/release/rustpy" "$out/"
{
    "$PYO3_PYTHON" -c 'import sys; print("python=%d.%d.%d" % sys.version_info[:3]); print("python_executable=" + sys.executable)'
    echo "rustc=$have"
} > "$out/BUILD_INFO"
log "built into $out: $(tr '\n' ' ' < "$out/BUILD_INFO")"
