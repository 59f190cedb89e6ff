#!/usr/bin/env bash
# A bounded run of every fuzz target (ci/test.sh runs it; fuzz/README.md says
# how to run them longer). Each target starts from its corpus in the
# repository (fuzz/corpus/<target>, read only here: what the run finds goes to
# a temporary directory) and runs for RUSTPY_FUZZ_SECONDS (default 20) s.
# A crash, a leak, a hang of one input over 30 s or an allocation over 256 MiB
# fails the run; the input that did it is kept in fuzz/artifacts/<target>/.
#
# Skipped, saying so, only when cargo-fuzz is not installed (ci/install.sh
# installs it) or RUSTPY_FUZZ_SECONDS=0.
#
# Usage: bash fuzz/run.sh [target ...]     (default: every target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${RUSTPY_DEPS:-$ROOT/.rustpy-deps}"
SECONDS_EACH="${RUSTPY_FUZZ_SECONDS:-20}"
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(stream frame bls)

say() { echo "[fuzz] $*" >&2; }

if [[ "$SECONDS_EACH" == 0 ]]; then
  say "SKIPPED: RUSTPY_FUZZ_SECONDS=0"
  exit 0
fi
# cargo finds cargo-fuzz on PATH; ci/install.sh puts it in $DEPS/cargo-fuzz
# when the machine has none.
export PATH="$PATH:$DEPS/cargo-fuzz/bin"
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "SKIPPED: cargo-fuzz is not installed and ci/install.sh could not install it" \
      "(cargo install --locked cargo-fuzz); the fuzz targets were not run"
  exit 0
fi

# cargo-fuzz passes -Z flags (the sanitizer): the stable toolchain takes them
# with RUSTC_BOOTSTRAP (this machine has no other toolchain).
export RUSTC_BOOTSTRAP=1
# Its own target dir: the fuzz build's flags differ from the workspace's.
TARGET_DIR="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
TARGET_DIR="${TARGET_DIR:-$ROOT/fuzz/target}"
cd "$ROOT/fuzz"

say "cargo fuzz build (release, debug assertions, AddressSanitizer) into $TARGET_DIR"
cargo fuzz build --target-dir "$TARGET_DIR"

work="$(mktemp -d -t rustpy-fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${TARGETS[@]}"; do
  [[ -d "corpus/$t" ]] || { say "no corpus for target '$t' (fuzz/corpus/$t)"; exit 2; }
  mkdir -p "$work/$t" "artifacts/$t"
  log="$work/$t.log"
  # New inputs go to the first corpus directory (temporary), the
  # repository's corpus is only read.
  if cargo fuzz run --target-dir "$TARGET_DIR" "$t" "$work/$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -timeout=30 -rss_limit_mb=2048 -malloc_limit_mb=256 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    runs="$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1 inputs in \2 s/p' "$log" | tail -n1)"
    cov="$(grep -o 'cov: [0-9]*' "$log" | tail -n1)"
    say "$t: ok, ${runs:-?} (${cov:-cov: ?}), corpus $(ls "corpus/$t" | wc -l) seeds + $(ls "$work/$t" | wc -l) found"
  else
    say "$t: FAILED; the end of libFuzzer's output:"
    tail -n 60 "$log" >&2
    say "$t: reproduce with: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t artifacts/$t/<file>"
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  say "failed: ${failed[*]}"
  exit 1
fi
say "all targets ran ${SECONDS_EACH} s each without a finding"
