#!/usr/bin/env bash
# The default experiment: set up (if needed); pretrain CLIP and MERU on Fashion-MNIST (or reuse
# the finished runs); unlearn the default concept ("sneaker") with AC on CLIP and HAC on MERU
# plus the baselines (Retrain from scratch on the retain classes, FT, GA; AC on MERU too);
# audit every model and print the comparison table and where the report is.
# Finished pretraining, Retrain and unlearning runs are reused, so a second call only re-reports.
# Output folder: RUNS=DIR (default runs). Extra arguments go to both unlearning runs
# (e.g. --config.forget=bag or --config.seeds=0,1,2). SMOKE=1 runs the same pipeline in seconds
# on the small generated data set with tiny models (what the test suite checks).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RUNS=${RUNS:-runs}
PY=.venv/bin/python
SW=""
DATA=()
SMOKE_ARGS=()
if [ -n "${SMOKE:-}" ]; then
  SW=",smoke,data=shapes"
  DATA=(--config.data.data_dir="$RUNS/tfds")
  SMOKE_ARGS=(--config.forget=circle)
fi
start=$(date +%s)
for model in clip meru; do
  echo "== pretraining $model (workdir $RUNS/${model}_fmnist)"
  $PY -m experiments.pretrain --config=experiments/configs/pretrain.py:$model$SW \
    --workdir="$RUNS/${model}_fmnist" ${DATA[@]+"${DATA[@]}"} | grep -v "^\[train\] step=" || true
  test -d "$RUNS/${model}_fmnist/pretrained" || { echo "pretraining $model failed" >&2; exit 1; }
done
for model in clip meru; do
  echo "== unlearning on $model (workdir $RUNS/main_$model)"
  if [ -n "${SMOKE:-}" ]; then  # the comparison's skeleton: Retrain and the model's AC/HAC
    SMOKE_ARGS=(--config.forget=circle --config.methods=retrain,$([ $model = clip ] && echo ac || echo hac))
  fi
  $PY -m experiments.unlearn --config=experiments/configs/unlearn.py:$model,exp=main$SW \
    --config.pretrained="$RUNS/${model}_fmnist/pretrained" \
    --config.retrain.dir="$RUNS/retrain" --config.cache_dir="$RUNS/unlearn_cache" \
    --config.report=False --workdir="$RUNS/main_$model" \
    ${DATA[@]+"${DATA[@]}"} ${SMOKE_ARGS[@]+"${SMOKE_ARGS[@]}"} "$@"
done
echo "== comparison: AC on CLIP, HAC on MERU, baselines"
$PY -m hac_jax.report "$RUNS/main_clip/results.json" "$RUNS/main_meru/results.json" \
  --out "$RUNS/main_report" --title "Unlearning the default concept: CLIP vs MERU" --tables-only
echo "== done in $(( $(date +%s) - start )) s; report (tables, plots): $RUNS/main_report/report.md"
