#!/usr/bin/env bash
# One-shot CUDA check of lcbooster (and the other packages' --amp paths) on a GPU machine whose python3
# already holds torch, torchvision and scikit-learn: run from the repository root.
#   bash packages/lcbooster/benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/gpu-check}
mkdir -p "$out"
export PYTHONPATH=shared/src:packages/lcbooster/src:packages/iformer/src:packages/m3ed/src:packages/knowfactor/src
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/xdg
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$py -c "import torch, torchvision, sklearn; print('torch', torch.__version__, 'tv', torchvision.__version__)"
echo "== lcbooster-bench: one full DivideMix epoch, 50k CIFAR-sized images, PreAct ResNet-18 (fp32, then AMP)"
$py -m lcbooster.cli bench --device cuda --full 2>&1 | tee "$out/bench_full_fp32.txt"
$py -m lcbooster.cli bench --device cuda --full --amp 2>&1 | tee "$out/bench_full_amp.txt"
$py -m lcbooster.cli bench --device cuda --full --method lcbooster --amp 2>&1 | tee "$out/bench_full_lcb_amp.txt"
echo "== lcbooster-bench --transforms: batched RandAugmentMC / AutoAugment vs their per-sample torchvision form"
$py -m lcbooster.cli bench --device cuda --transforms --batch-size 512 2>&1 | tee "$out/bench_transforms.txt"
echo "== lcbooster-train on CUDA with fp16 + AmpScaler, under torchrun (nccl, 1 process), then resume"
$py -m torch.distributed.run --standalone --nproc_per_node=1 -m lcbooster.cli train --dataset digits --noise sym80 \
  --device cuda --amp --epochs 6 --warmup-epochs 2 --relabel-epochs 4 --out /tmp/lcb-cuda --quiet --no-progress \
  && $py -c "import json; print(json.load(open('/tmp/lcb-cuda/results.json')))"
$py -m lcbooster.cli eval --weights /tmp/lcb-cuda/final.pt --device cuda
echo "== the other packages' one-epoch --amp runs on CUDA"
$py -m iformer.cli train --device cuda --amp --epochs 1 --out /tmp/if-cuda 2>&1 | tail -2
$py -m m3ed.cli train --device cuda --amp --epochs 1 --out /tmp/m3-cuda 2>&1 | tail -2
$py -m knowfactor.cli train --device cuda --amp --epochs 1 --out /tmp/kf-cuda 2>&1 | tail -2
echo done
