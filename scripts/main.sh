#!/usr/bin/env bash
# The default experiment: set up (if needed); pretrain CLIP and MERU on Fashion-MNIST (or reuse
# the finished runs); unlearn the default concept ("sneaker") with AC on CLIP and HAC on MERU
# plus the baselines (Retrain from scratch on the retain classes, FT, GA; AC on MERU too);
# audit every model and print the comparison table and where the report is.
# Finished pretraining, Retrain and unlearning runs are reused, so a second run only re-reports.
# Override the output folder with RUNS=DIR; extra arguments go to both unlearning runs
# (e.g. --config.forget=bag or --config.seeds=0,1,2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUNS=${RUNS:-runs}
PY=.venv/bin/python
start=$(date +%s)
for model in clip meru; do
  echo "== pretraining $model on Fashion-MNIST (workdir $RUNS/${model}_fmnist)"
  $PY -m experiments.pretrain \
    --config=experiments/configs/pretrain.py:$model --workdir="$RUNS/${model}_fmnist"
done
for model in clip meru; do
  echo "== unlearning on $model (workdir $RUNS/main_$model)"
  $PY -m experiments.unlearn --config=experiments/configs/unlearn.py:$model,exp=main \
    --config.pretrained="$RUNS/${model}_fmnist/pretrained" \
    --config.retrain.dir="$RUNS/retrain" --config.cache_dir="$RUNS/unlearn_cache" \
    --config.report=False --workdir="$RUNS/main_$model" "$@"
done
echo "== comparison (AC on CLIP, HAC on MERU, baselines)"
$PY -m hac_jax.report "$RUNS/main_clip/results.json" "$RUNS/main_meru/results.json" \
  --out "$RUNS/main_report" --title "Unlearning the default concept: CLIP vs MERU"
echo "== done in $(( $(date +%s) - start )) s; report: $RUNS/main_report/report.md"
