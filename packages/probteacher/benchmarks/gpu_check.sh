#!/usr/bin/env bash
# One-shot CUDA check of probteacher on a GPU machine whose python3 holds torch, torchvision, pycocotools and
# scikit-image: run from the repository root.
#   bash packages/probteacher/benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/probteacher-gpu-check}
mkdir -p "$out"
export PYTHONPATH=shared/src:packages/probteacher/src
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/xdg
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$py -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
echo "== the gpu-marked tests: an official-size (VGG-16, 600 px) PT step on CUDA, CPU and CUDA AP alike"
$py -m pytest packages/probteacher/tests/test_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/test_gpu.txt"
echo "== probteacher-bench: VGG-16 at 600 px (the official input), batch 2 and 8; the tiny detector at 128 px"
$py -m probteacher.cli bench --device cuda --detector vgg16 --size 600 --batch-size 2 2>&1 | tee "$out/bench_vgg_b2.txt"
$py -m probteacher.cli bench --device cuda --detector vgg16 --size 600 --batch-size 8 2>&1 | tee "$out/bench_vgg_b8.txt"
$py -m probteacher.cli bench --device cuda --detector tiny --size 128 --batch-size 8 2>&1 | tee "$out/bench_tiny_b8.txt"
echo "== probteacher-train, demo preset on CUDA (the toy set is generated on the CPU once)"
$py -m probteacher.cli train --device cuda --out "$out/train-demo" --quiet 2>&1 | tail -3
echo "done"
