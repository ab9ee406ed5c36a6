#!/usr/bin/env bash
# The CUDA checks of `--device cuda` (README, "On CUDA") in one run on a GPU machine that has
# Python 3.12, numpy, onnx, networkx, click and CUDA 13's nvidia-* pip packages, but no network.
#
# Prepare here, in the repository root (the folder .gpu/ is for the upload; keep it out of git):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       -d .gpu onnxruntime-gpu==1.31.1 onnx_graphsurgeon==0.6.1
#   python tools/ort_gpu_pack.py .gpu/onnxruntime_gpu-*.whl .gpu/ort-gpu.tar.xz --sm 90 && rm .gpu/onnxruntime_gpu-*.whl
#   mkdir -p .gpu/m && for m in resnet50 mobilenetv2 vit_b16 minilm; do     # speed_bench's models, weightless
#       python -c "import sys; sys.path.insert(0, 'tools'); import models_torch; print(models_torch.exported('$m', '/tmp/spa-models'))"
#       python tools/zoo_format.py strip /tmp/spa-models/$m.onnx .gpu/m/$m.onnx; done
#   (add held-out models to .gpu/m the same way; they get --target-latency 0.6 at batch 1 and 32)
# Then run `bash tools/cuda_checks.sh OUT_DIR` there; it writes its figures to OUT_DIR. None of models/, reports/
# and docs/ (41 MiB, mostly the weightless zoo) is read there, if the upload must stay small.
set -u
out=${1:-cuda-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
repo=$(cd "$(dirname "$0")/.." && pwd)
step() { echo; echo "=== $(date +%T) $*"; }

step "onnxruntime-gpu from .gpu/ort-gpu.tar.xz"
python3 -c "import tarfile; tarfile.open('$repo/.gpu/ort-gpu.tar.xz', 'r:xz').extractall('/tmp/ort-gpu')" || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/ort-gpu "$repo"/.gpu/onnx_graphsurgeon-*.whl
export PYTHONPATH=/tmp/ort-gpu:$repo:$repo/tools
libs=$(python3 -c "
import os, nvidia
print(':'.join(sorted({r for p in nvidia.__path__ for r, _, f in os.walk(p) if any('.so' in x for x in f)})))")
export LD_LIBRARY_PATH=$libs:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
mkdir -p /tmp/m
for f in "$repo"/.gpu/m/*.onnx; do python3 "$repo/tools/zoo_format.py" fill "$f" "/tmp/m/$(basename "$f")" || exit 1; done
spa() { python3 -m spa.cli "$@"; }

step "one bench (the CUDA provider loads, or the run stops here)"
spa bench --device cuda /tmp/m/mobilenetv2.onnx --batch 1,8 --runs 20 --no-memory || exit 1

for b in 8 64; do
    step "speed_bench --device cuda --batch $b: ratio 0.5 and --target-latency 0.5"
    timeout 400 python3 "$repo/tools/speed_bench.py" --models resnet50,mobilenetv2,vit_b16,minilm --ratios 0.5 \
        --no-tp --target-latency 0.5 --device cuda --batch $b --threads 1 --runs 8 --work /tmp/m 2>&1 \
        | tee "$out/speed_cuda_b$b.txt"
done

step "spa bench --explain on MobileNetV2 pruned at 0.5"
spa prune /tmp/m/mobilenetv2.onnx /tmp/m/mobilenetv2.p50.onnx --ratio 0.5 --force -q
for b in 1 8 64; do
    spa bench --explain /tmp/m/mobilenetv2.onnx /tmp/m/mobilenetv2.p50.onnx --device cuda --batch $b --threads 1 \
        2>&1 | tee -a "$out/explain_cuda.txt"
done

step "held-out models: --target-latency 0.6 at batch 1 and 32"
for f in /tmp/m/*.onnx; do
    case $(basename "$f" .onnx) in resnet50|mobilenetv2|vit_b16|minilm|*.*) continue;; esac
    for b in 1 32; do
        timeout 120 python3 -m spa.cli prune "$f" /tmp/heldout-out.onnx --target-latency 0.6 --device cuda --batch $b \
            --threads 1 --force 2>&1 | grep -E "latency|error" | sed "s|^|$(basename "$f") b$b: |" \
            | tee -a "$out/heldout_cuda.txt"
    done
done
step done
