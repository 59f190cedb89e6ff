#!/bin/sh
# rustpy-entrypoint: the container entry point of the rustpy images.
#
#   rustpy-entrypoint tritonserver [ARGS...]   unpack the model archive (if any), then exec
#                                              tritonserver with container defaults
#   rustpy-entrypoint unpack                   only unpack the model archive (init containers)
#   rustpy-entrypoint CMD [ARGS...]            exec CMD as is (rustpy, bash, ...)
#
# Environment:
#   RUSTPY_MODEL_ARCHIVE  a `rustpy zip` archive: a path, or an http(s):// URL fetched first.
#                         It is verified against its sha256 manifest and extracted by
#                         `rustpy unzip`; a tampered or unsafe archive stops the container.
#                         A local ARCHIVE.sha256 (`sha256sum` format), if present, must match.
#   RUSTPY_MODEL_DIR      where the archive is extracted (default /models/repo). It must not
#                         exist yet or be empty; its parent must be writable (an emptyDir).
#   RUSTPY_EXIT_TIMEOUT   seconds tritonserver waits for in-flight requests after SIGTERM
#                         (--exit-timeout-secs; default 30). Keep the pod's
#                         terminationGracePeriodSeconds above it.
#   TRITONSERVER, RUSTPY  the binaries (default: tritonserver and rustpy on PATH).
#
# tritonserver is exec'ed, so it is the process that receives SIGTERM: it stops taking
# requests, lets in-flight ones finish (up to the exit timeout), unloads every model (rustpy
# runs each model's finalize) and exits 0.
set -eu

log() { echo "[rustpy-entrypoint] $*" >&2; }

unpack() {
    archive="${RUSTPY_MODEL_ARCHIVE:-}"
    [ -n "$archive" ] || return 0
    dest="${RUSTPY_MODEL_DIR:-/models/repo}"
    if [ -e "$dest/rustpy-manifest.json" ]; then
        log "$dest already holds an unpacked archive; keeping it"
        return 0
    fi
    case "$archive" in
        http://* | https://*)
            tmp="$(mktemp -d)"
            # python3 is in every Triton image; no curl/wget needed. The URL is not
            # logged: it may carry a signed query string.
            log "downloading the model archive"
            python3 - "$archive" "$tmp/models.zip" <<'PY'
import shutil, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=300) as r, open(sys.argv[2], "wb") as f:
    shutil.copyfileobj(r, f)
PY
            local_archive="$tmp/models.zip"
            ;;
        *)
            tmp=""
            local_archive="$archive"
            ;;
    esac
    # An optional ARCHIVE.sha256 next to a local archive pins the whole file (KServe needs
    # a second object beside the archive anyway: its storage initializer unpacks, without
    # any check, a prefix that holds a single .zip).
    if [ -f "$local_archive.sha256" ]; then
        want="$(cut -d ' ' -f 1 < "$local_archive.sha256")"
        got="$(sha256sum < "$local_archive" | cut -d ' ' -f 1)"
        if [ "$want" != "$got" ]; then
            log "the model archive does not match $(basename "$local_archive").sha256"
            exit 1
        fi
    fi
    mkdir -p "$(dirname "$dest")"
    log "verifying and extracting the model archive into $dest"
    status=0
    "${RUSTPY:-rustpy}" -q unzip "$local_archive" -o "$dest" || status=$?
    [ -z "$tmp" ] || rm -rf "$tmp"
    if [ "$status" -ne 0 ]; then
        log "the model archive was rejected (rustpy unzip exit $status)"
        exit "$status"
    fi
}

has_arg() {
    want="$1"
    shift
    for a in "$@"; do
        case "$a" in "$want" | "$want"=*) return 0 ;; esac
    done
    return 1
}

case "${1:-}" in
    unpack)
        unpack
        ;;
    tritonserver)
        shift
        unpack
        if ! has_arg --exit-timeout-secs "$@"; then
            set -- "--exit-timeout-secs=${RUSTPY_EXIT_TIMEOUT:-30}" "$@"
        fi
        exec "${TRITONSERVER:-tritonserver}" "$@"
        ;;
    "")
        log "usage: rustpy-entrypoint tritonserver [ARGS...] | unpack | CMD [ARGS...]"
        exit 2
        ;;
    *)
        exec "$@"
        ;;
esac
