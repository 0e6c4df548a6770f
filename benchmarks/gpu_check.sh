#!/usr/bin/env bash
# The GPU checks of one short lease, in priority order, each under its own time limit so that a slow
# step cannot cost the rest: the CUDA tests, the engine against MONAI and float32 on every catalog model
# (rows kept as they come), the trained models on a real scan, and the training throughput of the
# full-size left-atrium recipes. Writes everything under OUT (default runs/gpu-check).
#
#   benchmarks/gpu_check.sh [OUT] [CT] [REAL_SCAN]
#   CT: the CT that the 512 x 512 x 200 volume is resampled from (default: the TotalSegmentator sample)
#   REAL_SCAN: a LeftAtrium2018 image for the trained models (skipped when absent)
set -u
OUT=${1:-runs/gpu-check}
CT=${2:-../shared/data/TotalSegmentatorSamples/example_ct.nii.gz}
REAL=${3:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
(nvidia-smi; python3 -c "import torch, SimpleITK, monai; print(torch.__version__, torch.version.cuda, torch.backends.cudnn.version(), SimpleITK.Version(), monai.__version__)") > "$OUT/env.txt" 2>&1
timeout 90 python3 -m pytest Testing/engine/test_gpu.py Testing/engine/test_out_of_memory.py -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt" | tail -3
MODELS="conresnet-pancreas-ct sipnet-prostate-mr raunet-liver-tumour-ct anunet-liver-ct sipnet-left-atrium-mr conresnet-left-atrium-mr anunet-left-atrium-mr raunet-left-atrium-mr rstn-pancreas-ct"
timeout 290 python3 benchmarks/gpu_vs_monai.py --ct "$CT" --models $MODELS --repeats 1 --deadline-s 190 --json "$OUT/gpu.jsonl" > "$OUT/bench.txt" 2>&1
if [ -n "$REAL" ] && [ -e "$REAL" ]; then
  timeout 60 python3 benchmarks/gpu_vs_monai.py --volume "$REAL" --models sipnet-left-atrium-mr anunet-left-atrium-mr --repeats 1 --json "$OUT/gpu_real.jsonl" > "$OUT/bench_real.txt" 2>&1
fi
for recipe in sipnet-left-atrium-mr conresnet-left-atrium-mr; do
  timeout 70 python3 benchmarks/training_throughput.py --recipe "$recipe" --device cuda --steps 50 --warmup 10 --json "$OUT/train.jsonl" 2>&1 | tail -1
done
