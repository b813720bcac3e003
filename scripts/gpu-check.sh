#!/usr/bin/env bash
# gpu-check.sh — on a GPU machine: build, run the GPU test tier (native and Go), and the
# session fault matrix against real GPU memory (every fault point: create.*, device.alloc,
# session.init.*, run.*, close.* through the session API, handshake.* through an in-process
# WebSocket server), then print one summary: bytes leaked per fault point (ledger and
# driver), the ledger against the driver and NVML's per-process memory (matched to the CUDA
# device by UUID) with the difference, the fitted growth of driver memory over many
# alloc/free cycles and failed starts, allocation throughput (allocs/s) and copy
# throughput (GB/s, H2D and D2H from pinned memory).
# Finishes in a few minutes. Exit status: 0 all passed, 1 a failure, 2 no GPU (skipped).
# "No GPU" is only ever the verdict where nothing says there is one: when nvidia-smi lists
# a GPU, /dev/nvidia0 exists or DEMON_REQUIRE_GPU=1, a tier that skips is a failure (a
# broken loader must not read as "no GPU").
#
#   scripts/gpu-check.sh            # real driver (libcuda.so.1)
#   scripts/gpu-check.sh --fake     # the FAKE CUDA driver (tests only): runs the same
#                                   # steps and parsing without a GPU; figures are the fake's
#   scripts/gpu-check.sh --bench    # also demon-bench's faults scenario on the cuda device
#                                   # (every fault point through the harness; ~1 min more)
#   DEMON_GPU_CHECK_N=10 scripts/gpu-check.sh   # injected failures per fault point (default 5)
#   DEMON_GPU_CHECK_CYCLES=1000 ...             # failed starts in the growth fit (default 200)
set -euo pipefail

cd "$(dirname "$0")/.."
GO=${GO:-go}
OUT=${GPU_CHECK_DIR:-build/gpu-check}
N=${DEMON_GPU_CHECK_N:-5}
CYCLES=${DEMON_GPU_CHECK_CYCLES:-200}
FAKE=0
BENCH=0
for arg in "$@"; do
  case $arg in
    --fake) FAKE=1 ;;
    --bench) BENCH=1 ;;
    *) echo "usage: scripts/gpu-check.sh [--fake] [--bench]" >&2; exit 1 ;;
  esac
done
mkdir -p "$OUT"
export DEMON_GPU_CHECK_N=$N DEMON_GPU_CHECK_CYCLES=$CYCLES
status=0

say() { printf '\n== %s\n' "$*"; }

nvsmi() {
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,driver_version,memory.used,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi failed"
  else
    echo "nvidia-smi not found"
  fi
}

# Why this machine evidently has a GPU ("" when nothing says so); the tests apply the same
# rule (trttest.GPUEvidence, GpuEvidence in native/tests/gpu/cuda_gpu_test.cc).
gpu_evidence() {
  local l
  if [[ "${DEMON_REQUIRE_GPU:-}" == 1 ]]; then echo "DEMON_REQUIRE_GPU=1"; return; fi
  if [[ -e /dev/nvidia0 ]]; then echo "/dev/nvidia0 exists"; return; fi
  if command -v nvidia-smi >/dev/null 2>&1 && l=$(timeout 20 nvidia-smi -L 2>/dev/null | grep -m1 '^GPU '); then
    echo "nvidia-smi -L lists $l"
  fi
}

EVIDENCE=""
if [[ $FAKE == 1 ]]; then
  say "FAKE CUDA driver mode: no GPU is used; every figure below is the fake's"
  ${CC:-cc} -shared -fPIC -O1 -o "$OUT/libfakecuda.so" native/tests/fake_cuda/fake_cuda.c -lpthread
  export DEMON_CUDA_LIBRARY="$PWD/$OUT/libfakecuda.so"
  export DEMON_GPU_TIER_ALLOW_FAKE=1
  export DEMON_FAKE_CUDA_TOTAL_BYTES=$((80 << 30))
  # The "CUDA context and other processes": memory the driver holds that the ledger never sees.
  export DEMON_FAKE_CUDA_RESERVED_BYTES=$((512 << 20))
  export DEMON_FAKE_CUDA_FREE_LAG=2
  export DEMON_FAKE_CUDA_ABORT_ON_HAZARD=1
else
  EVIDENCE=$(gpu_evidence)
  if [[ -n "$EVIDENCE" ]]; then
    echo "this machine has a GPU ($EVIDENCE): every tier must run, a skip is a failure"
    export DEMON_REQUIRE_GPU=1
  fi
fi

say "GPU (nvidia-smi) before"
NV_BEFORE=$(nvsmi)
echo "$NV_BEFORE"

say "dependencies (g++, cmake, GoogleTest)"
if ! scripts/deps.sh g++ cmake libgtest-dev; then
  echo "could not install the native tier's dependencies: the native GPU tier cannot run"
  status=1
fi

say "build"
$GO build ./trt/ ./session/ ./daemon/
$GO vet -tags gpu ./trt/ ./session/

# The native tier runs on the fake too in --fake mode (DEMON_GPU_TIER_ALLOW_FAKE=1).
say "native GPU tier (cuda_gpu_test, ctest label gpu)"
native_skipped=0
if ! command -v cmake >/dev/null 2>&1; then
  echo "FAIL: cmake not found, so the native GPU tier cannot be built"
  status=1
elif cmake -S . -B "$OUT/native" -DDEMON_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/cmake.log" 2>&1 &&
  cmake --build "$OUT/native" -j"$(nproc)" --target cuda_gpu_test >>"$OUT/cmake.log" 2>&1; then
  set +e
  timeout 300 "$OUT/native/cuda_gpu_test" >"$OUT/native.log" 2>&1
  native_rc=$?
  set -e
  grep -E '^\[ *(OK|FAILED|SKIPPED|PASSED) *\]|GB/s|^device:|Failure|no GPU' "$OUT/native.log" || true
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$OUT/native.log" | head -1)
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$OUT/native.log" | head -1)
  if [[ $native_rc != 0 ]]; then
    echo "native GPU tier: FAILED (exit status $native_rc; log $OUT/native.log)"
    status=1
  elif [[ -z "$passed" ]]; then
    echo "native GPU tier: no test summary in $OUT/native.log"
    status=1
  elif [[ "${skipped:-0}" != 0 ]]; then
    echo "native GPU tier: $skipped of $passed test(s) skipped"
    native_skipped=1
  fi
else
  echo "native build failed (see $OUT/cmake.log)"
  status=1
fi

say "Go GPU tier, fault matrix (N=$N per point) and growth fit ($CYCLES failed starts)"
set +e
timeout 540 $GO test -tags gpu -count=1 -v -timeout 500s -run 'GPU' ./trt/ ./session/ >"$OUT/go.log" 2>&1
go_rc=$?
set -e
grep -E '^(\s*--- (PASS|FAIL|SKIP)|ok |FAIL|panic)' "$OUT/go.log" || true
[[ $go_rc != 0 ]] && status=1

if [[ $BENCH == 1 ]]; then
  say "demon-bench faults scenario on the cuda device"
  if grep -q 'GPUCHECK ' "$OUT/go.log"; then
    set +e
    timeout 300 $GO run ./cmd/demon-bench --device cuda --scenarios faults --profile-seconds 10 --decoder oracle \
      --fault-rounds 2 --out "$OUT/bench" --no-plots --quiet >"$OUT/bench.log" 2>&1
    bench_rc=$?
    set -e
    if [[ $bench_rc != 0 ]]; then
      echo "demon-bench failed (exit status $bench_rc):"
      tail -20 "$OUT/bench.log"
      status=1
    else
      echo "wrote $OUT/bench/summary.md"
    fi
  else
    echo "skipped: the Go GPU tier did not run"
  fi
fi

say "GPU (nvidia-smi) after"
NV_AFTER=$(nvsmi)
echo "$NV_AFTER"

# The summary, from the tests' "GPUCHECK key=value ..." lines.
say "summary"
get() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
lines=$(grep -o 'GPUCHECK .*' "$OUT/go.log" || true)
if [[ -z "$lines" ]]; then
  if grep -q -- '--- SKIP' "$OUT/go.log"; then
    echo "no GPU: the GPU tier skipped ($(grep -m1 -o 'no GPU for the gpu tier: .*' "$OUT/go.log" || echo 'see the log'))"
    [[ $status == 0 ]] && status=2
    if [[ -n "$EVIDENCE" ]]; then
      echo "but this machine has a GPU ($EVIDENCE): a skipped tier is a failure"
      status=1
    fi
  else
    echo "no figures collected (see $OUT/go.log)"
    status=1
  fi
else
  device=$(grep -m1 -o 'device: .*' "$OUT/go.log" | sed 's/^device: //' || true)
  echo "device:              ${device:-unknown}"
  echo "nvidia-smi before:   ${NV_BEFORE}"
  echo "nvidia-smi after:    ${NV_AFTER}"
  l=$(grep 'GPUCHECK crosscheck' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "ledger vs driver:    ledger $(get ledger_bytes "$l") B, driver $(get driver_bytes "$l") B for the same buffers"
  l=$(grep 'GPUCHECK alloc_cycles' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "alloc throughput:    $(get allocs_per_s "$l") allocs/s (alloc+free, mixed 4 KiB..64 MiB); driver free $(get driver_free_before "$l") -> $(get driver_free_after "$l") B, leaked $(get leaked_bytes "$l") B"
  [[ -n "$l" ]] && echo "alloc cycles growth: $(get growth_per_1000 "$l") B per 1000 cycles (least-squares over $(get samples "$l") samples after a warm-up; limit 16 MiB)"
  l=$(grep 'GPUCHECK growth' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "failed-start growth: $(get growth_per_1000 "$l") B per 1000 failed starts ($(get failed_starts "$l") starts, $(get samples "$l") samples, $(get s "$l") s; limit 64 MiB)"
  l=$(grep 'GPUCHECK copies' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "copy throughput:     H2D $(get h2d_gbps "$l") GB/s, D2H $(get d2h_gbps "$l") GB/s (pinned, $(get bytes "$l") B x $(get iterations "$l"))"
  l=$(grep 'GPUCHECK staged_stream' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "staged stream tick:  $(get mean_tick_ms "$l") ms mean over $(get ticks "$l") ticks (oracle decoder, T=250)"
  l=$(grep 'GPUCHECK session ' <<<"$lines" || true)
  [[ -n "$l" ]] && echo "session:             driver free $(get driver_free_before "$l") -> $(get driver_free_after "$l") B"
  echo
  echo "ledger vs driver vs NVML (bytes; driver = cuMemGetInfo total - free, the whole GPU; NVML = this PID on the GPU with the device's UUID, -1 = unavailable)"
  printf '%-16s %14s %14s %16s %16s %16s\n' "phase" "ledger" "driver_used" "driver-ledger" "nvml_process" "nvml-ledger"
  while read -r l; do
    [[ -z "$l" ]] && continue
    printf '%-16s %14s %14s %16s %16s %16s\n' "$(get phase "$l")" "$(get ledger_bytes "$l")" "$(get driver_used_bytes "$l")" \
      "$(get driver_minus_ledger "$l")" "$(get nvml_process_bytes "$l")" "$(get nvml_minus_ledger "$l")"
  done < <(grep 'GPUCHECK accounting' <<<"$lines" || true)
  grep -m1 -o 'NVML per-process memory unavailable: .*' "$OUT/go.log" || true
  echo
  echo "fault matrix: bytes leaked per fault point after N failures (ledger exact; driver settled, after a bounded poll between failures)"
  printf '%-32s %-13s %3s %12s %12s %10s %14s %14s %9s\n' "fault point" "path" "n" "ledger_leak" "driver_leak" "wait_ms" "nvml_before" "nvml_after" "ms/start"
  while read -r l; do
    [[ -z "$l" ]] && continue
    printf '%-32s %-13s %3s %12s %12s %10s %14s %14s %9s\n' "$(get point "$l")" "$(get path "$l")" "$(get n "$l")" "$(get ledger_leaked_bytes "$l")" \
      "$(get driver_leaked_bytes "$l")" "$(get max_wait_ms "$l")" "$(get nvml_process_before "$l")" "$(get nvml_process_after "$l")" "$(get ms_per_start "$l")"
  done < <(grep 'GPUCHECK fault' <<<"$lines" || true)
  if [[ $BENCH == 1 && -f "$OUT/bench/summary.md" ]]; then
    echo
    echo "demon-bench (in-process, --device cuda):"
    sed -n '/^## faults/,/^## /p' "$OUT/bench/summary.md" | sed '1d;$d'
  fi
fi
if [[ $native_skipped == 1 && $status == 0 ]]; then
  echo "the native GPU tier skipped while the Go tier ran: see $OUT/native.log"
  status=1
fi
echo
case $status in
  0) echo "gpu-check: PASS" ;;
  2) echo "gpu-check: SKIPPED (no GPU)" ;;
  *) echo "gpu-check: FAIL (logs in $OUT/)" ;;
esac
exit $status
