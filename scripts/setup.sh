#!/usr/bin/env bash
# Create .venv and install pettingllms into it (editable), with the right PyTorch.
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh --dev    # plus the test tools and `transformers serve`
# Without a GPU, PyTorch's CPU build is installed first: a bare `torch` requirement would pull
# several GB of CUDA packages. It comes from a local wheel when pip has one (torch==X+cpu),
# else from PyTorch's CPU index; TORCH_INDEX_URL chooses another index, TORCH_SPEC the version,
# PYTHON the interpreter (3.11 or newer).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
CPU_INDEX=https://download.pytorch.org/whl/cpu
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if ! python_ok "$PYTHON"; then
  echo "setup: $PYTHON is missing or older than 3.11; pettingllms needs Python 3.11+ (set PYTHON=python3.11)" >&2
  exit 1
fi
# A venv that is broken (interpreter gone), too old, or without pip is made anew.
if [ -e .venv ] && ! { python_ok .venv/bin/python && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
  echo "setup: .venv is unusable (old Python, missing interpreter or pip); recreating it"
  rm -rf .venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

# pip, quiet, without this workplace's noisy "Location ... is ignored" lines; keeps pip's exit status.
pip() {
  .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing $TORCH_SPEC (CUDA build)"
    pip install "$TORCH_SPEC"
  elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "setup: no GPU, installing $TORCH_SPEC from $TORCH_INDEX_URL"
    pip install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    echo "setup: no GPU, installing $TORCH_SPEC (CPU build)"
    pip install "$TORCH_SPEC+cpu" >/dev/null 2>&1 || pip install "$TORCH_SPEC" --index-url "$CPU_INDEX"
  fi
fi
pip install -e ".$extras"
.venv/bin/python -c "import torch, pettingllms; print(f'setup: pettingllms {pettingllms.__version__}, torch {torch.__version__}, ready in .venv')"
