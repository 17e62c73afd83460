#!/usr/bin/env bash
# One-shot CUDA check of facemae on a GPU machine whose python3 already holds torch and torchvision: the
# gpu-marked tests, the paper-size throughput (fp32 and AMP), and a short CUDA run of every stage. From the
# repository root:
#   bash packages/facemae/benchmarks/gpu_check.sh OUT_DIR
set -uo pipefail
out=${1:-/tmp/facemae-gpu-check}
mkdir -p "$out"
export PYTHONPATH=shared/src:packages/facemae/src
export PYTHONUNBUFFERED=1 XDG_CACHE_HOME=/tmp/xdg
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo "== gpu-marked tests"
$py -m pytest packages/facemae/tests -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/gpu_tests.txt"
echo "== paper-size throughput: ViT-B/16 MAE + IRM through IResNet-50, reconstruction at mask ratios 0.25-0.9"
$py -m facemae.cli bench --device cuda --batch-size 256 2>&1 | tee "$out/bench_fp32.txt"
$py -m facemae.cli bench --device cuda --batch-size 256 --amp 2>&1 | tee "$out/bench_amp.txt"
echo "== the pipeline on CUDA with AMP: FaceMAE, a release, recognition on it, leak rates"
$py -m facemae.cli train --stage mae --device cuda --amp --epochs 2 --phi-epochs 2 --out /tmp/fm-cuda/mae --quiet \
  && $py -m facemae.cli reconstruct --weights /tmp/fm-cuda/mae/final.pt --out /tmp/fm-cuda/release --device cuda \
  && $py -m facemae.cli train --stage fr --data /tmp/fm-cuda/release --device cuda --amp --epochs 2 \
       --out /tmp/fm-cuda/fr --quiet \
  && $py -m facemae.cli privacy --manifest /tmp/fm-cuda/release.manifest.json \
       --attacker-weights /tmp/fm-cuda/fr/final.pt --out /tmp/fm-cuda/privacy --device cuda 2>&1 | tail -20
echo "== facemae-repro, 1 seed, on CUDA (its real-face check reads the LFW crops of scikit-image)"
if $py -c "import skimage" 2>/dev/null; then
  $py -m facemae.cli repro --seeds 1 --device cuda --out "$out/repro" 2>&1 | tail -25
else
  echo "SKIPPED: scikit-image is not installed in $py"
fi
echo done
