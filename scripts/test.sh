#!/usr/bin/env bash
# Install everything the tests need (the locked versions), then run the whole suite in random order.
#   bash scripts/test.sh                        # a new seed each run, printed first
#   RAGTUNE_TEST_SEED=1234 bash scripts/test.sh # the same order again
# Arguments go to pytest (bash scripts/test.sh tests/serving -x). Modules run in a random order and so do
# the tests inside each module; a module's tests stay together, so module fixtures (a vLLM server, a
# browser app) start once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False
seed=${RAGTUNE_TEST_SEED:-$(( (RANDOM << 15) | RANDOM ))}
echo "test order: random, seed $seed (RAGTUNE_TEST_SEED=$seed bash scripts/test.sh repeats it)"
exec .venv/bin/python -m pytest --random-order-bucket=module --random-order-seed="$seed" "$@"
