#!/usr/bin/env bash
# The default experiment: set up (if needed), then pretrain CLIP and MERU from scratch on
# Fashion-MNIST with the default configs and report their zero-shot accuracy.
# A finished run is reused: re-running with the same workdir resumes from its newest checkpoint,
# and a completed one returns at once. Override the output folder with RUNS=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUNS=${RUNS:-runs}
for model in clip meru; do
  echo "== pretraining $model on Fashion-MNIST (workdir $RUNS/${model}_fmnist)"
  .venv/bin/python -m experiments.pretrain \
    --config=experiments/configs/pretrain.py:$model --workdir="$RUNS/${model}_fmnist" "$@"
done
echo "== zero-shot results (from each run's eval.json)"
for model in clip meru; do
  .venv/bin/python - "$RUNS/${model}_fmnist/eval.json" "$model" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:>5}: macro zero-shot top-1 {100 * r['zero_shot']['macro_acc']:.2f}%")
PY
done
