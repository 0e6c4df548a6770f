#!/usr/bin/env bash
# The GPU checks of one short lease, in priority order, each under its own time limit so that a slow
# step cannot cost the rest: the CUDA tests, the engine against MONAI and float32 on every catalog model
# (rows kept as they come), the networks alone under several execution settings, and the trained
# models on a real scan. Writes everything under OUT (default runs/gpu-check).
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
timeout 75 python3 -m pytest Testing/engine/test_gpu.py Testing/engine/test_out_of_memory.py -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt" | tail -3
# The engine against MONAI: the models the first lease did not reach first, then ConResNet again (the
# mapping back to the input grid moved to the GPU after that lease); MONAI's bf16 twin is skipped (it
# changed MONAI's time by under 5 % in the first lease).
MODELS="sipnet-prostate-mr conresnet-pancreas-ct rstn-pancreas-ct sipnet-left-atrium-mr anunet-liver-ct conresnet-left-atrium-mr anunet-left-atrium-mr raunet-left-atrium-mr raunet-liver-tumour-ct"
timeout 220 python3 benchmarks/gpu_vs_monai.py --ct "$CT" --models $MODELS --repeats 1 --no-monai-amp --deadline-s 170 --json "$OUT/gpu.jsonl" > "$OUT/bench.txt" 2>&1
# Where the network time goes: precision, layout and compilation on one batch of each network.
timeout 60 python3 benchmarks/gpu_network_variants.py --variants fp32 bf16 bf16-cl fp16-cl --deadline-s 45 --json "$OUT/variants.jsonl" > "$OUT/variants.txt" 2>&1
timeout 110 python3 benchmarks/gpu_network_variants.py --models conresnet-pancreas-ct sipnet-left-atrium-mr sipnet-prostate-mr --variants bf16-cl-compile bf16-cl-graphs --deadline-s 80 --json "$OUT/variants.jsonl" >> "$OUT/variants.txt" 2>&1
if [ -n "$REAL" ] && [ -e "$REAL" ]; then
  timeout 40 python3 benchmarks/gpu_vs_monai.py --volume "$REAL" --models anunet-left-atrium-mr conresnet-left-atrium-mr --repeats 1 --no-monai-amp --json "$OUT/gpu_real.jsonl" > "$OUT/bench_real.txt" 2>&1
fi
