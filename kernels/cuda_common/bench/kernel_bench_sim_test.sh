#!/usr/bin/env bash
# Runs kernel_bench on the CPU simulator with toy shapes: every kernel must run, every check must
# pass, and the table must come last.
set -euo pipefail
out=$("$1" --tiny --once 2>/dev/null)
echo "$out"
last=$(tail -n 1 <<<"$out")
[[ "$last" == "| cast"* || "$last" == "| unscale"* ]] || { echo "table is not last"; exit 1; }
rows=$(grep -c '^| ' <<<"$out")
[[ "$rows" -eq 21 ]] || { echo "expected a header and 20 kernel rows, got $rows"; exit 1; }
if grep -q 'FAILED\|MISMATCH\|FLAG SET\|nan' <<<"$out"; then echo "a kernel failed"; exit 1; fi
echo "kernel_bench_sim: OK"
