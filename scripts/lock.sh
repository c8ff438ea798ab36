#!/usr/bin/env sh
# Resolve every dependency to exact versions: requirements/dev.lock.txt (runtime + dev + docs + the
# embedded gemma-3-270m, what `make test` and CI install) and requirements/demo.lock.txt (the runtime
# only, what `make demo` installs; the same versions as dev.lock.txt). Run `make lock` after changing a range in pyproject.toml, or to
# move to newer releases once `make test-latest` passes on them.
#
# The lock is for CPython 3.11 on Linux x86_64, the project's machines. torch is resolved as its
# CPU build (2.13.0) but left out of the files: scripts/setup_env.sh installs it first, from the
# local wheel or the PyTorch CPU index, so that pip never pulls a CUDA build.
set -eu
cd "$(dirname "$0")/.."
TORCH=${TORCH_VERSION:-2.13.0}
UV=${UV:-}
if [ -z "$UV" ]; then
  if command -v uv >/dev/null 2>&1; then UV=uv
  else
    [ -x .venv-tools/bin/uv ] || { python3 -m venv .venv-tools && .venv-tools/bin/pip install -q "uv==0.13.9"; }
    UV=.venv-tools/bin/uv
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "torch==$TORCH+cpu" > "$tmp/torch.txt"
if ls /opt/wheels/torch-"$TORCH"+cpu-*.whl >/dev/null 2>&1; then
  src="--find-links /opt/wheels"
else
  src="--extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match"
fi
common="--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-package torch -c $tmp/torch.txt $src --quiet"
header="# Locked by scripts/lock.sh (make lock) for CPython 3.11 on Linux x86_64; torch $TORCH (CPU) is installed apart."
# shellcheck disable=SC2086
$UV pip compile pyproject.toml requirements/models.in --extra dev --extra docs $common \
  --no-header -o "$tmp/dev.txt"
# shellcheck disable=SC2086
$UV pip compile pyproject.toml -c "$tmp/dev.txt" $common --no-header -o "$tmp/demo.txt"
for f in dev demo; do
  { echo "$header"; grep -v -e '^--find-links' -e '^--extra-index-url' -e '^--index-url' "$tmp/$f.txt" \
      | sed -e "s|-c $tmp/dev.txt|-c requirements/dev.lock.txt|" -e "s|-c $tmp/torch.txt|torch $TORCH (CPU)|"; } > requirements/$f.lock.txt
done
echo "lock: requirements/dev.lock.txt ($(grep -c '==' requirements/dev.lock.txt) packages), requirements/demo.lock.txt ($(grep -c '==' requirements/demo.lock.txt) packages)"
