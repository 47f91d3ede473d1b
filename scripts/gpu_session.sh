#!/usr/bin/env bash
# What a session that is lent a GPU runs (see README, "Trained models"): benchmarks and the training of
# the Backpack and Transformer that the book analyses. Results go to $OUT (JSON, curves, fp16 weights).
#   MODE=smoke bash scripts/gpu_session.sh   # ~3 min: throughput, compile check, a short training run
#   MODE=full STEPS=6000 bash scripts/gpu_session.sh   # the models in data/models/
#   MODE=micro STEPS=4000 bash scripts/gpu_session.sh  # the paper's Micro size: results and curves only
#   MODE=speed bash scripts/gpu_session.sh   # <= 12 min (each step has a limit): chapter 10's GPU tests, sense profile, benchmark
#   MODE=study bash scripts/gpu_session.sh   # <= 9.5 min a call: issue 24's training study (scripts/gpu_study.py), see below
#   MODE=study ONLY="lr baseline" bash scripts/gpu_session.sh   # some runs or groups of it (gpu_study.py --plan lists them)
set -euo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
MODE=${MODE:-smoke}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__)"
python3 -c "from backpack.data import load_tokens; print({s: len(load_tokens(s)) for s in ('train', 'validation')})"
# The models of chapter 7: d=256, 4 layers, 4 heads, k=16, vocabulary 16,384, context 256.
SIZE=(--preset tiny --vocab-size 16384 --n-positions 256 --n-embd 256 --n-layer 4 --n-head 4 --num-senses 16
      --no-sense-dedup)  # on a GPU, torch.unique costs more than the senses it saves (measured)
COMMON=(--block-size 256 --batch-size 64 --learning-rate 1e-3 --warmup-steps 200 --weight-decay 0.1
        --eval-interval 250 --eval-batches 40 --log-interval 50 --no-progress --seed 0)
if [ "$MODE" = smoke ]; then
  python3 scripts/bench_training.py --device cuda --steps 30 --out "$OUT/training_throughput_gpu.json"
  python3 scripts/bench_training.py --device cuda --steps 30 --compile --out "$OUT/training_throughput_gpu_compiled.json"
  python3 -m backpack.train --model backpack "${SIZE[@]}" "${COMMON[@]}" --max-steps 100 --eval-interval 50 \
      ${COMPILE:-} --out-dir /tmp/runs/smoke
  cp /tmp/runs/smoke/results.json "$OUT/smoke_results.json"
elif [ "$MODE" = speed ]; then
  # chapter 10 on the GPU. The tests: the Triton kernels and the caches against the plain
  # computation (the image has no nbval, hence no addopts). The profile of senses per distinct id
  # vs at every position. The benchmark, which rewrites its JSON after each part, so that a run
  # cut short keeps what it measured. Each step has its own time limit.
  timeout 150 python3 -m pytest -q -o addopts="" -p no:cacheprovider tests/test_cuda.py \
      tests/test_attention.py tests/test_fast.py 2>&1 | tee "$OUT/tests_gpu.txt" | tail -n 25 || true
  timeout 90 python3 - <<'PY' 2>&1 | tee "$OUT/profile_gpu.txt" || true
import torch
from backpack.data import batch_at, load_tokens
from backpack.bench import device_sense_profile
from backpack.model import BackpackConfig, BackpackLM
tokens = load_tokens("train")
sizes = {"the book's d=256 (chapter 7's GPU runs)":
             dict(vocab_size=16384, n_embd=256, n_layer=4, n_head=4, n_positions=256),
         "the paper's Small": BackpackConfig.preset("small").to_dict()}
for name, size in sizes.items():
    seq = size["n_positions"]
    torch.manual_seed(0)
    model = BackpackLM(BackpackConfig(**{**size, "num_senses": 16})).cuda()
    offsets = torch.randint(len(tokens) - seq - 1, (16384 // seq,), generator=torch.Generator().manual_seed(0))
    x = batch_at(tokens, offsets, seq)[0].cuda()
    print(f"== {name}, bf16: {x.shape[0]} x {seq} tokens, {len(torch.unique(x))} distinct ids")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        print(device_sense_profile(model, x, rows=8))
PY
  timeout "${BENCH_LIMIT:-330}" python3 -m backpack.bench --device cuda --out "$OUT/speed_gpu.json" 2>&1 \
      | tee "$OUT/speed_gpu.txt" || true
elif [ "$MODE" = study ]; then
  # Issue 24, part 1: 20 variants of the shipped pair's training (learning-rate sweep, the paper's
  # schedule, the authors' sense init, k = 4/8, a second seed, 2x and 4x the steps), STUDY_PARALLEL
  # `backpack train` processes at once, each in /tmp/study-runs/NAME. As each run ends, $OUT/study
  # gets its line in results.jsonl and a new summary.json and curves.png (4 files come back with
  # logs.tgz: at most 8 may), so a call cut short keeps what finished. A run past RUN_LIMIT seconds,
  # or running at DEADLINE, stops with its checkpoint (every 500 steps); call again on the warm
  # machine and it resumes exactly, finished runs skipped. A new session skips the runs of the
  # committed data/study/results.jsonl: commit $OUT/study's three files there
  # (`python scripts/gpu_study.py --study data/study --plot-only` redraws the plot and summary).
  # Time, measured on the H200 (2026-12-04, data/study: 12 runs in two calls of 238 s and 340 s):
  # alone, a Backpack trains 732k tokens/s and a Transformer 1.14M (6,000 steps: 149 s and 99 s with
  # ~14 s of start and save); runs at once share the GPU, 4 at once 1.74x and 6 at once 1.80x one
  # run's throughput (mean utilisation ~80-100%, ~6 GB each), so STUDY_PARALLEL=4. The 20 runs take
  # 44 min one after another, ~25 min four at once; the 8 not yet run (`python scripts/gpu_study.py
  # --plan --study data/study --parallel 4`) ~18 min. bp-4x alone (551 s) is longer than a call, so
  # it finishes in a second call on the warm machine. One 15-minute session holds about one call and
  # a half, so two sessions, estimated from those shares (2, 3 and 5 at once interpolated):
  # ONLY="tf-paper-schedule bp-k8 bp-k4 bp-seed1 bp-2x" STUDY_PARALLEL=5, ~9 min (one call, and a
  # short second if bp-2x is cut at the deadline), then ONLY="tf-2x bp-4x tf-4x", ~13 min (two calls).
  mkdir -p "$OUT/study"
  if [ "${STUDY_SCALE:-full}" = full ] && [ -f data/study/results.jsonl ]; then
    cp data/study/results.jsonl "$OUT/study/results.jsonl"  # the runs done in earlier sessions
  fi
  status=0
  python3 scripts/gpu_study.py --scale "${STUDY_SCALE:-full}" --study "$OUT/study" --runs-dir /tmp/study-runs \
      --parallel "${STUDY_PARALLEL:-4}" --time-limit-s "${RUN_LIMIT:-520}" --deadline-s "${DEADLINE:-520}" \
      ${ONLY:+--only $ONLY} || status=$?
  echo "gpu_study.py exit status $status (0: all finished; 75: some cut or not started, call again)"
  logs=(); for run in /tmp/study-runs/*/; do  # each run's log and study record, in one file
    name=$(basename "$run"); { [ -d "$run" ] && [ "$name" != _data ]; } || continue
    logs+=("$name/train.log" "$name/study.json")
  done
  if [ ${#logs[@]} -gt 0 ]; then tar -C /tmp/study-runs -czf "$OUT/study/logs.tgz" "${logs[@]}"; fi
elif [ "$MODE" = micro ]; then
  # The paper's Micro width and depth (d=384, 6 layers, 6 heads, k=16) on our 16k vocabulary:
  # curves and results only (the weights would be 57 MB + 34 MB, too big for the repository).
  STEPS=${STEPS:-4000}
  MICRO=(--preset micro --vocab-size 16384 --n-positions 256 --no-sense-dedup)
  for model in backpack transformer; do
    python3 -m backpack.train --model $model "${MICRO[@]}" "${COMMON[@]}" --max-steps "$STEPS" \
        --out-dir /tmp/runs/micro-$model > /tmp/runs_micro_$model.log 2>&1 || { tail -n 30 /tmp/runs_micro_$model.log; exit 1; }
    grep -E "val " /tmp/runs_micro_$model.log | awk 'NR % 4 == 0'; tail -n 1 /tmp/runs_micro_$model.log
    cp /tmp/runs/micro-$model/results.json "$OUT/micro-$model-results.json"
    cp /tmp/runs/micro-$model/metrics.jsonl "$OUT/micro-$model-metrics.jsonl"
  done
else
  STEPS=${STEPS:-5000}
  mkdir -p /tmp/runs
  python3 scripts/bench_attention.py --device cuda --out "$OUT/attention_gpu.json" > /tmp/runs/attention_gpu.txt 2>&1
  tail -n 30 /tmp/runs/attention_gpu.txt
  python3 scripts/bench_training.py --device cuda --steps 40 --out "$OUT/training_throughput_gpu.json"
  for model in backpack transformer; do
    python3 -m backpack.train --model $model "${SIZE[@]}" "${COMMON[@]}" --max-steps "$STEPS" ${COMPILE:-} \
        --out-dir /tmp/runs/$model > /tmp/runs/train_$model.log 2>&1
    grep -E "val " /tmp/runs/train_$model.log | awk 'NR % 4 == 0'; tail -n 2 /tmp/runs/train_$model.log
  done
  # fp16 weights, configs, curves, logs and results; never the optimizer state of checkpoints/
  tar -C /tmp/runs -cf /tmp/models.tar attention_gpu.txt train_backpack.log train_transformer.log \
      backpack/model backpack/metrics.jsonl backpack/results.json backpack/curves.png \
      transformer/model transformer/metrics.jsonl transformer/results.json transformer/curves.png
  split -b 15M -d /tmp/models.tar "$OUT/models.tar.part-"
fi
ls -la "$OUT"
