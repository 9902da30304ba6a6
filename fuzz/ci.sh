#!/usr/bin/env bash
# Bounded fuzzing for CI: every target for FUZZ_SECONDS (default 15) over a
# temporary copy of its committed corpus. Fails on the first crash, panic,
# failed assertion, leak or timeout, and prints the input that caused it.
# The long runs are described in fuzz/README.md.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-15}
targets=(frame lock_args admin_args inspect_replies ctl_reply virconf libvirt_json snapshot)

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo fmt -- --check
# Several codegen units: the build is most of this step's time, and the
# targets run only seconds each.
cargo +nightly fuzz build --codegen-units 16

bin=target/x86_64-unknown-linux-gnu/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    cp corpus/"$t"/* "$work/$t"/ 2>/dev/null || true
    # New inputs go to the copy; a crashing input to $work, printed below.
    if "$bin/$t" "$work/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$t-" >"$work/$t.log" 2>&1; then
        echo "fuzz $t: $(grep -E '^#[0-9]+' "$work/$t.log" | tail -1)"
    else
        status=1
        echo "fuzz $t: FAILED"
        # The panic or sanitizer report first, then how libFuzzer ended.
        grep -A 3 -E "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer" "$work/$t.log" | head -n 40
        grep -E "^(SUMMARY|MS:|artifact_prefix)" "$work/$t.log" | head -n 10
        for a in "$work/$t"-*; do
            [ -e "$a" ] || continue
            echo "input ($a):"
            od -A x -t x1z -v "$a" | head -n 40
        done
    fi
done
exit "$status"
