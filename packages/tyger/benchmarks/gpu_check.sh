#!/usr/bin/env bash
# One-shot CUDA check of tyger on a GPU machine whose python3 already holds torch and rdkit: the gpu-marked
# tests, the benchmark at the paper's network sizes up to a 100k pool, and a paper-preset active-learning run of
# Tyger and random on an embedded task. From the repository root:
#   bash packages/tyger/benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/tyger-gpu-check}
mkdir -p "$out"
export PYTHONPATH=shared/src:packages/tyger/src
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/xdg
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$py -c "import torch, rdkit; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'rdkit', rdkit.__version__)"
echo "== gpu-marked tests"
$py -m pytest packages/tyger/tests -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.txt"
echo "== benchmark: featurisation, querying-module epoch, AL rounds at 1k/10k/100k pools, paper sizes (5x300 GINE)"
$py -m tyger.cli bench --device cuda --model paper --molecules 5000 --out "$out/bench" 2>&1 | tee "$out/bench.txt"
echo "== tyger-loop, paper preset, tyger and random on nci-alerts, 1 seed, on CUDA"
$py -m tyger.cli loop --device cuda --preset paper --dataset nci-alerts --selector tyger,random --seeds 1 \
  --quiet --out "$out/loop" 2>&1 | tail -15
echo done
