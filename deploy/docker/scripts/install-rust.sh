#!/bin/sh
# install-rust.sh VERSION: a Rust toolchain of at least VERSION on PATH.
#
# The images' build stage starts without Rust and installs exactly VERSION with
# rustup (the Dockerfiles' RUST_VERSION). Where a toolchain of at least VERSION
# is already installed (CI, which runs this script too: tests/e2e/test_deploy.py)
# it is kept. Either way the toolchain must also meet the workspace's
# rust-version, or the build would stop later with a less clear error.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
. "$here/common.sh"

want="${1:?usage: install-rust.sh VERSION}"
required="$(workspace_rust_version "$here/../../..")"
[ -n "$required" ] || die "no rust-version in Cargo.toml"
version_ge "$want" "$required" \
    || die "RUST_VERSION $want is older than the workspace's rust-version $required (Cargo.toml): raise it in deploy/docker/Dockerfile*"

have="$(rustc --version 2>/dev/null | awk '{print $2}')" || have=""
if [ -n "$have" ] && version_ge "$have" "$want"; then
    log "rustc $have is installed (at least $want): keeping it"
    exit 0
fi
log "installing Rust $want with rustup"
curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
    | sh -s -- -y --profile minimal --default-toolchain "$want"
