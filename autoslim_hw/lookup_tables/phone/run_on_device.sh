#!/bin/sh
# run_on_device.sh: measure this autoslim-hw bundle on an Android phone over adb.
# Written by autoslim-hw @TOOL_VERSION@ for @MODEL@ (bundle @BUNDLE_ID@, @N_FILES@ models).
#
# Run it on the computer the phone is attached to by USB (Linux, macOS or WSL; any
# POSIX sh), with USB debugging on (Settings > Developer options). For every model
# of models/ it runs TFLite's benchmark_model on the phone, one thread, pinned to one
# core, and saves its output to results/<model>.txt here. Then:
#   autoslim-hw lut import results --bundle . --device <phone-name> --out <phone>.json
#
# Environment:
#   BENCHMARK_MODEL  TFLite's benchmark_model built for the phone's ABI (required
#                    unless ./benchmark_model exists next to this script). Nightly
#                    prebuilt binaries, from the TFLite "Performance measurement" page:
#                    arm64-v8a:   @URL_AARCH64@
#                    armeabi-v7a: @URL_ARM@
#   BENCHMARK_MODEL_VERSION  a label for that binary (e.g. "nightly 2025-06-01"); it
#                    is recorded in results/device.txt with the binary's sha256.
#   CORE             the core to pin to with taskset. Default: the core with the
#                    highest cpuinfo_max_freq (the prime core of a big.LITTLE SoC);
#                    the highest-numbered one on ties. Example: CORE=7
#   ANDROID_SERIAL   which phone, when several are attached (see `adb devices`).
#   RESULTS          where results go (default: results/ next to this script).
#   SLEEP            seconds to pause between models to let the phone cool (default 0).
#   REMOTE_DIR       working directory on the phone (default /data/local/tmp/autoslim-hw).
#
# Resumable: a model whose result file is complete (it has benchmark_model's
# "Inference timings" line) is skipped, so after an interruption, a failure or an
# unplugged cable just run it again: an interrupted run leaves no result file, a
# failed one leaves the phone's output (for `lut import` to report) and runs again.
# Keep the phone plugged in, screen on, and nothing else running. To free the space
# on the phone afterwards: adb shell rm -r /data/local/tmp/autoslim-hw
#
# Settings: --num_threads=1 --warmup_runs=@WARMUP_RUNS@ --num_runs=@NUM_RUNS@ --warmup_min_secs=@WARMUP_MIN_SECS@ --min_secs=@MIN_SECS@ --use_xnnpack=true

set -u

case "${1:-}" in
  -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) echo "run_on_device.sh: takes no arguments (settings are environment variables; see --help)" >&2; exit 2 ;;
esac

BUNDLE_ID=@BUNDLE_ID@
here=$(cd "$(dirname "$0")" && pwd)
results=${RESULTS:-$here/results}
remote=${REMOTE_DIR:-/data/local/tmp/autoslim-hw}
pause=${SLEEP:-0}

die() { echo "run_on_device.sh: $*" >&2; exit 2; }
# adb shell, with the carriage returns old adb versions add removed
dsh() { adb shell "$@" </dev/null | tr -d '\r'; }
complete() { grep -q 'Inference timings in us' "$1" 2>/dev/null && ! grep -q 'Benchmarking failed' "$1"; }

command -v adb >/dev/null 2>&1 || die "adb not found on PATH: install Android SDK platform-tools (https://developer.android.com/tools/releases/platform-tools)"

# --- exactly one phone --------------------------------------------------------------
if [ -n "${ANDROID_SERIAL:-}" ]; then
  state=$(adb -s "$ANDROID_SERIAL" get-state 2>/dev/null | tr -d '\r')
  [ "$state" = device ] || die "phone ANDROID_SERIAL=$ANDROID_SERIAL is not attached and authorized (state: ${state:-absent}); see adb devices"
else
  listing=$(adb devices 2>/dev/null | tr -d '\r')
  ready=$(printf '%s\n' "$listing" | awk 'NR > 1 && $2 == "device" {print $1}')
  n=$(printf '%s\n' "$ready" | grep -c .)
  if [ "$n" -eq 0 ]; then
    waiting=$(printf '%s\n' "$listing" | awk 'NR > 1 && $2 == "unauthorized"' | grep -c .)
    if [ "$waiting" -gt 0 ]; then
      die "the phone is attached but unauthorized: accept the USB debugging prompt on its screen"
    fi
    die "no phone attached: plug it in by USB with USB debugging on, then check adb devices"
  fi
  [ "$n" -eq 1 ] || die "$n phones attached ($(echo $ready)); choose one with ANDROID_SERIAL=<serial>"
  ANDROID_SERIAL=$ready
fi
export ANDROID_SERIAL

abi=$(dsh getprop ro.product.cpu.abi)
case "$abi" in
  arm64*) url=@URL_AARCH64@ ;;
  armeabi*) url=@URL_ARM@ ;;
  *) url="the TFLite benchmark binaries page (ai.google.dev/edge/litert/models/measurement)" ;;
esac

# --- benchmark_model ----------------------------------------------------------------
if [ -z "${BENCHMARK_MODEL:-}" ] && [ -f "$here/benchmark_model" ]; then
  BENCHMARK_MODEL=$here/benchmark_model
fi
[ -n "${BENCHMARK_MODEL:-}" ] || die "set BENCHMARK_MODEL to TFLite's benchmark_model for this phone ($abi); download it from $url"
[ -f "$BENCHMARK_MODEL" ] || die "BENCHMARK_MODEL=$BENCHMARK_MODEL does not exist; download it from $url"
if command -v sha256sum >/dev/null 2>&1; then
  bm_sha=$(sha256sum "$BENCHMARK_MODEL" | cut -d' ' -f1)
elif command -v shasum >/dev/null 2>&1; then
  bm_sha=$(shasum -a 256 "$BENCHMARK_MODEL" | cut -d' ' -f1)
else
  bm_sha=unknown
fi

# --- results of this bundle and this phone only ----------------------------------------
mkdir -p "$results" || die "cannot create $results"
prop() { dsh getprop "$1"; }
model=$(prop ro.product.model)
fingerprint=$(prop ro.build.fingerprint)
if [ -f "$results/device.txt" ]; then
  old_bundle=$(sed -n 's/^bundle_id=//p' "$results/device.txt")
  old_fp=$(sed -n 's/^fingerprint=//p' "$results/device.txt")
  old_model=$(sed -n 's/^product_model=//p' "$results/device.txt")
  [ "$old_bundle" = "$BUNDLE_ID" ] || die "$results holds results of another bundle ($old_bundle); use RESULTS=<another dir>"
  [ "$old_fp" = "$fingerprint" ] || die "$results holds results from another phone or Android build ($old_model); use RESULTS=<another dir>"
fi

total=0
todo=0
for f in "$here"/models/*.tflite; do
  [ -f "$f" ] || die "no models in $here/models"
  total=$((total + 1))
  complete "$results/$(basename "$f" .tflite).txt" || todo=$((todo + 1))
done
if [ "$todo" -eq 0 ]; then
  echo "all $total results are in $results already; next: autoslim-hw lut import $results --bundle $here --device <phone-name> --out <phone>.json"
  exit 0
fi

# --- the core to pin to ---------------------------------------------------------------
if [ -z "${CORE:-}" ]; then
  CORE=$(dsh 'for c in /sys/devices/system/cpu/cpu[0-9]*; do f=$(cat $c/cpufreq/cpuinfo_max_freq 2>/dev/null || echo 0); echo "${c##*/cpu} $f"; done' \
    | sort -k2,2n -k1,1n | tail -n 1 | cut -d' ' -f1)
fi
case "$CORE" in
  ''|*[!0-9]*) die "CORE must be a core number such as 7, got '$CORE'" ;;
esac
[ "$CORE" -lt 64 ] || die "CORE=$CORE is not a core number below 64"
mask=$(printf '%x' $((1 << CORE)))
core_freq=$(dsh "cat /sys/devices/system/cpu/cpu$CORE/cpufreq/cpuinfo_max_freq 2>/dev/null")

# --- push -------------------------------------------------------------------------------
echo "phone $model ($ANDROID_SERIAL, $abi): pushing benchmark_model and $total models to $remote"
dsh "mkdir -p '$remote'" || die "cannot create $remote on the phone"
adb push "$BENCHMARK_MODEL" "$remote/benchmark_model" >/dev/null || die "adb push of $BENCHMARK_MODEL failed"
dsh "chmod 755 '$remote/benchmark_model'"
adb push --sync "$here/models" "$remote/" >/dev/null || die "adb push of the models failed (is the phone's storage full?)"

if [ "$(dsh "taskset $mask true >/dev/null 2>&1 && echo ok")" = ok ]; then
  pin="taskset $mask"
  pinned=yes
else
  echo "run_on_device.sh: warning: taskset is missing on the phone or cannot use core $CORE; running unpinned (expect more variance)" >&2
  pin=""
  pinned=no
fi

{
  echo "bundle_id=$BUNDLE_ID"
  echo "device_kind=phone"
  echo "product_model=$model"
  echo "manufacturer=$(prop ro.product.manufacturer)"
  echo "soc_model=$(prop ro.soc.model)"
  echo "soc_manufacturer=$(prop ro.soc.manufacturer)"
  echo "board_platform=$(prop ro.board.platform)"
  echo "hardware=$(prop ro.hardware)"
  echo "android_release=$(prop ro.build.version.release)"
  echo "sdk=$(prop ro.build.version.sdk)"
  echo "fingerprint=$fingerprint"
  echo "abi=$abi"
  echo "core=$CORE"
  echo "core_max_freq_khz=$core_freq"
  echo "pinned=$pinned"
  echo "benchmark_model_sha256=$bm_sha"
  echo "benchmark_model_version=${BENCHMARK_MODEL_VERSION:-unknown}"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$results/device.txt.part" && mv "$results/device.txt.part" "$results/device.txt"

# --- measure ----------------------------------------------------------------------------
part=""
trap 'rm -f "$part"; echo; echo "interrupted: run it again to resume" >&2; exit 130' INT TERM
i=0
failed=0
for f in "$here"/models/*.tflite; do
  i=$((i + 1))
  name=$(basename "$f" .tflite)
  out="$results/$name.txt"
  complete "$out" && continue
  part="$out.part"
  adb shell "cd '$remote' && $pin ./benchmark_model --graph=models/$name.tflite --num_threads=1 --warmup_runs=@WARMUP_RUNS@ --num_runs=@NUM_RUNS@ --warmup_min_secs=@WARMUP_MIN_SECS@ --min_secs=@MIN_SECS@ --use_xnnpack=true" \
    </dev/null 2>&1 | tr -d '\r' > "$part"
  if complete "$part"; then
    avg=$(sed -n 's/.*Inference (avg): \([0-9.eE+-]*\).*/\1/p' "$part" | tail -n 1)
    echo "[$i/$total] $name: $avg us"
  else
    if ! adb get-state >/dev/null 2>&1; then
      rm -f "$part"
      die "lost the phone during $name; reconnect it and run this script again to resume"
    fi
    failed=$((failed + 1))
    why=$(grep -m 1 -E 'ERROR|rror|ailed|not found|denied' "$part" || tail -n 1 "$part")
    echo "[$i/$total] $name: FAILED: $why" >&2
  fi
  mv "$part" "$out"
  part=""
  [ "$pause" = 0 ] || sleep "$pause"
done

if [ "$failed" -gt 0 ]; then
  echo "$failed model(s) failed (their output is in $results); run this script again to retry them" >&2
  exit 1
fi
echo "done: results in $results; next: autoslim-hw lut import $results --bundle $here --device <phone-name> --out <phone>.json"
