#!/usr/bin/env bash
# A screenshot of the MLflow UI comparing two runs, taken with Debian's headless Chromium
# (apt-get install chromium). Start the UI first, in the folder that holds mlruns/:
#   .venv/bin/mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --workers 1 --port 5000
# then: scripts/mlflow_screenshot.sh RUN_ID_1 RUN_ID_2 EXPERIMENT_ID out.png [port]
set -euo pipefail
run1=$1 run2=$2 experiment=$3 out=$4 port=${5:-5000}
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1500,4000 \
  --virtual-time-budget=20000 --screenshot="$out" \
  "http://127.0.0.1:${port}/#/compare-runs?runs=[\"${run1}\",\"${run2}\"]&experiments=[\"${experiment}\"]"
