#!/usr/bin/env bash
# One-shot CUDA check of tbvs on a GPU machine whose python3 holds torch (and transformers, opencv for the
# full benchmark): run from the repository root.
#   bash packages/tbvs/benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/tbvs-gpu-check}
mkdir -p "$out"
export PYTHONPATH=shared/src:packages/tbvs/src
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/xdg
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "== the gpu-marked tests: a paper-size CUDA training step, CPU and CUDA metrics alike"
$py -m pytest packages/tbvs/tests/test_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/test_gpu.txt"
echo "== tbvs-bench at the paper size (320 px, clip 3, random BERT-base): batch 1, batch 8, batch 8 with AMP"
$py -m tbvs.cli bench --device cuda --steps 10 --out "$out/bench_b1.json" 2>&1 | tee "$out/bench_b1.txt"
$py -m tbvs.cli bench --device cuda --steps 10 --batch-size 8 --out "$out/bench_b8.json" 2>&1 | tee "$out/bench_b8.txt"
$py -m tbvs.cli bench --device cuda --steps 10 --batch-size 8 --amp --out "$out/bench_b8_amp.json" 2>&1 \
  | tee "$out/bench_b8_amp.txt"
echo "== tbvs-train, demo preset on CUDA (the synthetic set is generated on the CPU once)"
$py -m tbvs.cli train --device cuda --out "$out/train-demo" --quiet 2>&1 | tail -3
echo "done"
