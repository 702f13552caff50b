#!/usr/bin/env bash
# The GPU tables of benchmarks/results/gpu.md: issue 7's configuration on one GPU, most important runs first, one
# process per measurement, each JSON result appended to "$1/gpu.jsonl" as soon as it exists (a run over its time limit
# is recorded as such and the rest go on). Usage: bash benchmarks/run_gpu_benchmarks.sh OUT_DIR [PEAK_BF16_TFLOPS]
set -u
out=${1:?usage: run_gpu_benchmarks.sh OUT_DIR [PEAK_BF16_TFLOPS]}
peak=${2:-989}  # H100/H200 SXM dense bf16, datasheet
mkdir -p "$out"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/../src${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))" | tee "$out/device.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv >>"$out/device.txt" 2>&1

run() {  # run SECONDS ARGS...: one benchmark process, its last JSON object appended to gpu.jsonl
    local limit=$1; shift
    echo "== $*" | tee -a "$out/log.txt"
    local start=$SECONDS
    if timeout "$limit" python3 "$@" >"$out/last.txt" 2>>"$out/log.txt"; then
        python3 - "$out/last.txt" "$((SECONDS - start))" "$*" >>"$out/gpu.jsonl" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
objects = [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]
if not objects:  # bench_train_step prints one indented object
    objects = [json.loads(text[text.index("{"):])]
for obj in objects:
    print(json.dumps({"command": sys.argv[3], "wall_s": int(sys.argv[2]), **obj}))
EOF
    else
        echo "{\"command\": \"$*\", \"failed_or_timed_out_after_s\": $((SECONDS - start))}" >>"$out/gpu.jsonl"
    fi
    tail -n 1 "$out/gpu.jsonl" | cut -c1-400
}

gpu="--device cuda --threads 8 --peak_tflops $peak"
train="bench_train_step.py $gpu --warmup 5 --repeats 20"
infer="bench_inference.py $gpu --warmup 2 --repeats 5"
run 90 $train --batch_size 16
run 90 $train --batch_size 16 --precision bf16
run 90 $train --batch_size 256 --precision bf16
run 120 $infer --precision bf16 --batch_size 256 --sources 64
run 60 $infer --workflow invert_generate --batch_size 8
run 240 $train --batch_size 256 --precision bf16 --compile
run 60 $train --batch_size 256 --precision bf16 --channels_last
run 200 $infer --workflow invert_generate --precision bf16 --batch_size 256 --compile
run 150 $train --batch_size 16 --precision bf16 --compile
echo done | tee -a "$out/log.txt"
