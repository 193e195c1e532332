#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: the Fashion-MNIST idx files (Debian package) and a
# virtual environment (.venv) with the pinned dependencies, the converter extra and test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST_DIR=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing dataset-fashion-mnist (Debian package)"
    # Not fatal: the tests build their own data; only the experiments need these files.
    { apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; } ||
      echo "[setup] warning: could not install dataset-fashion-mnist; the experiments need it" >&2
  else
    echo "[setup] warning: $FMNIST_DIR missing; run 'sudo apt-get install dataset-fashion-mnist'" \
         "or pass your own directory to the experiments (tests do not need it)" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.hac_jax_installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing hac-jax and pinned dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -m pip install -q -e ".[convert,dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import hac_jax, jax, flax, torch" 
  touch "$stamp"
fi
