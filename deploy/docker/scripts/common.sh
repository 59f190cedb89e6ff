# Shared by the image build scripts (sourced, POSIX sh).

log() { echo "[rustpy-build] $*" >&2; }
die() { log "error: $*"; exit 1; }

# version_ge A B: true if version A >= version B (dotted numbers, "1.89" = "1.89.0").
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# The workspace's rust-version (Cargo.toml at the repository root $1).
workspace_rust_version() {
    sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$1/Cargo.toml" | head -n1
}
