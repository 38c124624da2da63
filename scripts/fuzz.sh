#!/usr/bin/env bash
# Fuzzes the host's admission of untrusted request data (head limits, target decoding, routing,
# query and body validation) with libFuzzer through cargo-fuzz, on the Python-free core.
#
#   scripts/fuzz.sh [SECONDS]      # default 60
#
# cargo-fuzz passes flags that stable rustc accepts only with RUSTC_BOOTSTRAP; no other
# toolchain is needed. Findings land in fuzz/artifacts/request_target/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cargo fuzz run --fuzz-dir fuzz --sanitizer none request_target fuzz/corpus/request_target -- \
    -max_total_time="$seconds" -max_len=4096
