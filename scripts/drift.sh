#!/usr/bin/env bash
# Drift check: install the newest versions pyproject.toml allows into a virtualenv of its own
# (.venv-drift), list what differs from the lock, and run the serving tests (vLLM, the OpenAI API, the
# openai client) on them. Run it before refreshing the locks, or on a schedule, so that a new release
# that breaks ragtune is seen here before a user installs it.
#   bash scripts/drift.sh                  # serving tests
#   bash scripts/drift.sh tests            # the whole suite on the newest versions
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-drift bash scripts/install.sh --test --upgrade
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
seed=${RAGTUNE_TEST_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "test order: random, seed $seed"
exec .venv-drift/bin/python -m pytest --random-order-bucket=module --random-order-seed="$seed" "${@:-tests/serving}"
