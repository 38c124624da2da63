#!/usr/bin/env bash
# Fuzzes the host's handling of untrusted request data (target decoding, routing, query
# validation, JSON parsing) with libFuzzer through cargo-fuzz.
#
#   scripts/fuzz.sh [SECONDS]      # default 60
#
# cargo-fuzz passes flags that stable rustc accepts only with RUSTC_BOOTSTRAP; no other
# toolchain is needed. Findings land in fuzz/artifacts/request_target/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export PYO3_PYTHON="${PYO3_PYTHON:-$(python3 -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))')}"
export RUSTC_BOOTSTRAP=1
cargo fuzz run --fuzz-dir fuzz --sanitizer none request_target fuzz/corpus/request_target -- \
    -max_total_time="$seconds" -max_len=4096
