#!/usr/bin/env bash
# VNN-COMP: install_tool.sh v1
# Installs nnverify into the current Python: torch pinned first (so nothing
# pulls another torch build), then the package itself.
set -euo pipefail
VERSION=${1:-v1}
if [ "$VERSION" != "v1" ]; then
    echo "install_tool.sh: expected version string v1, got '$VERSION'" >&2
    exit 1
fi
TOOL_DIR=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install torch==2.13.0
"$PYTHON" -m pip install -e "$TOOL_DIR"
"$PYTHON" -m verifier --version
