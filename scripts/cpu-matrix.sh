#!/usr/bin/env bash
# Runs the test suite under each combination of thread count (1, 2) and instruction-set cap
# (AVX2, AVX-512) for MKL, oneDNN and ATen's own kernels, so that float results that differ between
# CPUs differ on this one machine too. Usage: bash scripts/cpu-matrix.sh [pytest args...]
# Prints one line per combination and exits non-zero when any combination fails. Logs: $LOGS.
# Each combination has its own --basetemp, so another pytest run meanwhile cannot prune its folders.
set -uo pipefail
cd "$(dirname "$0")/.."
LOGS=${LOGS:-build/cpu-matrix}
mkdir -p "$LOGS"
status=0
for threads in 1 2; do
  for isa in avx2 avx512; do
    case $isa in
      avx2)   onednn=AVX2;        mkl=AVX2 ;;
      avx512) onednn=AVX512_CORE; mkl=AVX512 ;;
    esac
    log="$LOGS/threads$threads-$isa.log"
    started=$(date +%s)
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads ONEDNN_MAX_CPU_ISA=$onednn MKL_ENABLE_INSTRUCTIONS=$mkl \
      ATEN_CPU_CAPABILITY=$isa python3 -m pytest -q -p no:cacheprovider --basetemp="$LOGS/tmp-threads$threads-$isa" "$@" >"$log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || status=1
    echo "threads=$threads isa=$isa rc=$rc $(( $(date +%s) - started ))s: $(tail -n 1 "$log")"
  done
done
exit $status
