#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a lent GPU machine, which has torch, transformers and
# safetensors but neither diffusers nor polars nor this package installed, and no network.
#   bash benchmarks/gpu_check.sh prepare   # here, once: the diffusers wheel into .device/wheels (git-ignored)
#   bash benchmarks/gpu_check.sh run       # there: installs the wheel aside, runs the check -> $OUT/gpu_check.json
# Options after `run` go to gpu_check.py (e.g. --quick, --only sdxl). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-}" in
  prepare)
    version=$(.venv/bin/python -c "import diffusers; print(diffusers.__version__)")
    rm -rf .device/wheels && mkdir -p .device/wheels
    .venv/bin/pip download --quiet --no-deps --only-binary=:all: -d .device/wheels "diffusers==$version"
    du -sh .device/wheels ;;
  run)
    site=$(mktemp -d)
    if compgen -G ".device/wheels/*.whl" >/dev/null; then
      "$PYTHON" -m pip install --quiet --no-deps --no-index --target "$site" .device/wheels/*.whl
    fi
    # This checkout as the `diffdict` package: pyproject.toml maps the top-level folders under that name.
    pkg=$(mktemp -d) && mkdir "$pkg/diffdict" && cp diffdict/*.py "$pkg/diffdict/"
    for sub in adapters dictionaries studies analysis toyworld configs; do ln -s "$PWD/$sub" "$pkg/diffdict/$sub"; done
    PYTHONPATH="$pkg:$site${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" benchmarks/gpu_check.py \
      --json "${OUT:-.}/gpu_check.json" "${@:2}" ;;
  *) echo "usage: $0 prepare | run [gpu_check.py options]" >&2; exit 2 ;;
esac
