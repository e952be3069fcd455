#!/usr/bin/env bash
# Create .venv and install pettingllms into it (editable), with the right PyTorch.
#   bash scripts/setup.sh          # runtime only
#   bash scripts/setup.sh --dev    # plus the test tools and `transformers serve`
# Without a GPU, PyTorch's CPU build is installed first: a bare `torch` requirement would pull
# several GB of CUDA packages. Set TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu)
# to choose where that CPU build comes from; TORCH_SPEC to choose the version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

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
  else
    echo "setup: no GPU, installing $TORCH_SPEC (CPU build)"
    pip install "$TORCH_SPEC" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  fi
fi
pip install -e ".$extras"
.venv/bin/python -c "import torch, pettingllms; print(f'setup: pettingllms {pettingllms.__version__}, torch {torch.__version__}, ready in .venv')"
