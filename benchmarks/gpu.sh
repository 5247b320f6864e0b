#!/usr/bin/env bash
# Everything we need to learn from a GPU machine, as one command of at most 8 minutes.
#
#   bash benchmarks/gpu.sh                          # on the GPU machine: installs .wheelhouse/, then runs all
#   bash benchmarks/gpu.sh --device cpu --tiny      # here: the same steps at smoke size, in about 2 minutes
#
# Steps, each under its own time limit so that one hang cannot eat the lease (seconds in brackets):
#   install (60)      the .wheelhouse/ wheels (../shared/gpu/make-wheelhouse.sh) with --no-deps, so the
#                     image's own torch stays; ee_search itself is imported from this checkout
#   cuda tests (90)   pytest -m cuda: bf16 + channels_last, trials on their own streams, torch.compile
#   throughput (70)   benchmarks/train_throughput.py
#   exit inference (40), concurrency (40)
#   workers (180)     benchmarks/workers.py: `ee-search run --workers 4` sharing the device, 8 trials of
#                     3 epochs of ee_resnet-64 at SVHN's size, nvidia-smi sampled every 500 ms meanwhile
# Results go to $OUT (the device tool's folder; default benchmarks/results/gpu-<date>), at most 8 files:
# summary.json (each step's exit code and seconds, the device), gpu.log, cuda-tests.xml, nvidia-smi.csv and
# one JSON per benchmark, named *-h100.json / *-h200.json / *-cpu.json after the device. A failed step is recorded and
# the next one runs: a lease is too short to stop at the first error.
set -uo pipefail
cd "$(dirname "$0")/.."

device=cuda
tiny=0
install=1
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --tiny) tiny=1; shift ;;
        --no-install) install=0; shift ;;
        *) echo "gpu.sh: unknown argument $1 (takes --device cuda|cpu, --tiny, --no-install)" >&2; exit 2 ;;
    esac
done

out="${OUT:-benchmarks/results/gpu-$(date -u +%Y%m%d-%H%M)}"
mkdir -p "$out"
log="$out/gpu.log"
python="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
steps=()

step() {  # step NAME LIMIT_S COMMAND...: run it under `timeout`, log it, remember its exit code and time
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    echo "== $name (limit ${limit}s): $*" | tee -a "$log"
    timeout --kill-after=10 "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    steps+=("{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - start))}")
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
}

if [ "$install" = 1 ] && [ -d .wheelhouse ]; then
    step install 60 "$python" -m pip install --quiet --no-index --no-deps .wheelhouse/*.whl
fi

tag=$("$python" -c "import torch
name = torch.cuda.get_device_name(0).lower() if '$device' == 'cuda' and torch.cuda.is_available() else 'cpu'
print(next((k for k in ('h200', 'h100', 'a100') if k in name), 'cpu' if name == 'cpu' else 'gpu'))" 2>>"$log" || echo unknown)
size=()
[ "$tiny" = 1 ] && size=(--tiny)

step cuda-tests 90 "$python" -m pytest -m cuda -q -p no:cacheprovider -o addopts="" --timeout=90 \
    tests/test_cuda.py --junitxml="$out/cuda-tests.xml"
step throughput 70 "$python" benchmarks/train_throughput.py --device "$device" --quick "${size[@]}" \
    --json "$out/train-throughput-$tag.json"
step exit-inference 40 "$python" benchmarks/exit_inference.py --device "$device" --quick "${size[@]}" \
    --json "$out/exit-inference-$tag.json"
step concurrency 40 "$python" benchmarks/concurrency.py --device "$device" --quick "${size[@]}" \
    --json "$out/concurrency-$tag.json"
# The study at SVHN's size, through the product's own `--workers`: 4 processes share the device.
svhn=(--set "data.synthetic={train_size: 73257, test_size: 26032}" --set model.name=ee_resnet --set model.width=64
      --set train.max_epochs=3 --set search.n_trials=8 --set search.pruner.type=none)
workers=(--rows 4 --repeats 1 "${svhn[@]}")
[ "$tiny" = 1 ] && workers=(--tiny)
smi=""
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,power.draw --format=csv -lms 500 \
        >"$out/nvidia-smi.csv" 2>/dev/null &
    smi=$!
fi
step workers 180 "$python" benchmarks/workers.py --device "$device" "${workers[@]}" --json "$out/workers-$tag.json"
[ -n "$smi" ] && kill "$smi"

nvidia=$( (nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo none) | head -1)
failed=0
for s in "${steps[@]}"; do [[ "$s" == *'"rc": 0,'* ]] || failed=1; done
{
    echo "{\"benchmark\": \"gpu.sh\", \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\", \"device\": \"$device\","
    echo " \"tag\": \"$tag\", \"tiny\": $([ "$tiny" = 1 ] && echo true || echo false), \"nvidia_smi\": \"$nvidia\","
    echo " \"seconds\": $SECONDS, \"failed\": $([ "$failed" = 1 ] && echo true || echo false),"
    echo " \"steps\": [$(IFS=,; echo "${steps[*]}")]}"
} >"$out/summary.json"
echo "gpu.sh: $SECONDS s, results in $out (failed: $failed)"
exit "$failed"
