#!/usr/bin/env bash
# The README's screenshots, made by the browser test's own script: a tiny study run, `ee-search ui`
# over it, headless Chromium on the runs table, a trial, its trade-off figure and the exported front.
set -euo pipefail
cd "$(dirname "$0")/.."
EE_SEARCH_SCREENSHOTS="$PWD/docs/img" "${PYTHON:-.venv/bin/python}" -m pytest -q -p no:randomly \
    tests/test_mlflow_ui_in_a_browser.py
