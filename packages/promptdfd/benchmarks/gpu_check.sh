#!/usr/bin/env bash
# On a machine with a CUDA device, from the repository root: the gpu-marked tests, the throughput benchmark on
# the device, and one full demo distillation there. Not run yet: no device was lent to the session that wrote it.
set -euo pipefail
cd "$(dirname "$0")/../../.."
python -m pytest packages/promptdfd/tests/test_gpu.py -m gpu -q
python -m promptdfd.cli bench --device cuda --batch-size 1024
out=$(mktemp -d)
python -m promptdfd.cli distill --device cuda --out "$out/run"
