#!/usr/bin/env bash
# One call on a CUDA machine (<= 8 minutes on one H100/H200-class GPU) that checks the GPU path:
#   1. the `gpu`-marked tests (device placement, bf16 weights with fp32 score accumulators, and a smoke
#      run of finding 1 on CUDA with a random-weight model);
#   2. the scoring benchmark on the Llama-3.1-8B architecture with random bf16 weights (no download),
#      beside the authors' per-layer reference in the same run; targets: signed >= 5,000 tokens/s,
#      absolute >= 2,000, peak < 70 GiB, >= 10x the reference (benchmarks/scoring.py GPU_TARGETS).
# JSON goes to benchmarks/results/ (scoring-llama-3.1-8b-arch-cuda.json and gpu_check.json, which
# records each step's exit status and seconds). Without CUDA it exits non-zero at once.
#
#   benchmarks/gpu_check.sh             # run it
#   benchmarks/gpu_check.sh --dry-run   # print the steps, run nothing (works anywhere)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
RESULTS=benchmarks/results
SCORING_JSON="$RESULTS/scoring-llama-3.1-8b-arch-cuda.json"
STEPS=(
  "tests:240:$PY -m pytest -m gpu tests -q -p no:cacheprovider"
  "scoring:300:$PY benchmarks/scoring.py --device cuda --no-progress --out $SCORING_JSON"
)

if [ "${1:-}" = "--dry-run" ]; then
  for s in "${STEPS[@]}"; do echo "${s#*:*:}"; done
  exit 0
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA device visible to torch here ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda build", torch.version.cuda)' 2>/dev/null || echo 'torch not importable')); run it on a GPU machine" >&2
  exit 2
fi
mkdir -p "$RESULTS"
status=0
record=()
for s in "${STEPS[@]}"; do
  name="${s%%:*}"; rest="${s#*:}"; limit="${rest%%:*}"; cmd="${rest#*:}"
  echo "== gpu_check: $name (limit ${limit}s): $cmd"
  t0=$(date +%s)
  timeout "$limit" bash -c "$cmd"
  rc=$?
  record+=("{\"step\": \"$name\", \"command\": \"$cmd\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - t0 ))}")
  [ $rc -eq 0 ] || status=1
done
"$PY" - "$RESULTS/gpu_check.json" "${record[@]}" <<'PYEOF'
import json, subprocess, sys, datetime, torch
out, steps = sys.argv[1], [json.loads(s) for s in sys.argv[2:]]
try:
    scoring = json.load(open("benchmarks/results/scoring-llama-3.1-8b-arch-cuda.json"))
except (OSError, ValueError):
    scoring = None
sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
report = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": sha,
          "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "steps": steps,
          "scoring_targets": (scoring or {}).get("targets")}
json.dump(report, open(out, "w"), indent=1)
print(json.dumps(report, indent=1))
PYEOF
exit $status
