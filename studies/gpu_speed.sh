#!/usr/bin/env bash
# GPU check for one NVIDIA GPU (issue 17 item 5): odmaug's CUDA path, then generator_speed.py on CUDA.
#
#   bash studies/gpu_speed.sh                 # on a machine with one CUDA GPU (budget < 6 min on one H200)
#   DRY_RUN_CPU=1 bash studies/gpu_speed.sh   # the same stages with --device cpu at a tiny size, no compile
#
# Stages (elapsed time printed after each):
#   1. CUDA tests: `pytest -q -k cuda` (the suite has none today: "no tests collected" is reported, not
#      an error) and a CUDA smoke of odmaug itself: a DM and an ODM step of the trainer's step unit on the
#      default generator under bf16 autocast + channels_last, a compiled forward, and a 2-step guided DDIM
#      sample, all checked finite.
#   2. generator_speed.py --device cuda: odmaug (precision auto = bf16 autocast, channels_last, eager
#      and torch.compile; DM and ODM loss) against diffusers UNet2DModel eager fp32 (dropout 0 and 0.1),
#      eager bf16 (autocast and pure bf16) and torch.compile, for training and guided DDIM sampling.
#      Compiles are capped by --compile-timeout (reported as COMPILE TIMEOUT, not a hang).
# Results: $OUT/generator_speed_cuda.json if OUT is set, else studies/results/generator_speed_cuda.json.
# Knobs (environment): BATCH (default 64), ROUNDS (7), SAMPLING_STEPS (5), COMPILE_TIMEOUT (90 s),
# SPEED_TIMEOUT (330 s, the whole of stage 2), THREADS (CPU threads: nproc; 1 in the dry run).
# With no CUDA device (and no DRY_RUN_CPU) it prints "no CUDA device: skipped" and exits 0.
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
START=$(date +%s)
stage_start=$START
elapsed() {  # elapsed <stage name>
    local now
    now=$(date +%s)
    echo "== ${1}: $((now - stage_start)) s (total $((now - START)) s)"
    stage_start=$now
}

DEVICE=cuda
if [[ "${DRY_RUN_CPU:-0}" == "1" ]]; then
    DEVICE=cpu
    echo "DRY_RUN_CPU=1: running the stages on the CPU at a tiny size, without compile (a check of this script)"
elif ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.cuda.device_count() > 0 else 1)' 2>/dev/null; then
    echo "no CUDA device: skipped"
    exit 0
fi

RESULTS_DIR=${OUT:-studies/results}
mkdir -p "$RESULTS_DIR"
if [[ "$DEVICE" == "cuda" ]]; then
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    BATCH=${BATCH:-64}; ROUNDS=${ROUNDS:-7}; SAMPLING_STEPS=${SAMPLING_STEPS:-5}
    COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-90}; SPEED_TIMEOUT=${SPEED_TIMEOUT:-330}
    COMPILE_ARGS=(--no-cold-compile --threads "${THREADS:-$(nproc)}")
    JSON="$RESULTS_DIR/generator_speed_cuda.json"
else
    BATCH=${BATCH:-2}; ROUNDS=${ROUNDS:-1}; SAMPLING_STEPS=${SAMPLING_STEPS:-1}
    COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-90}; SPEED_TIMEOUT=${SPEED_TIMEOUT:-300}
    COMPILE_ARGS=(--no-compile --threads "${THREADS:-1}")
    JSON="$RESULTS_DIR/generator_speed_cuda_dryrun_cpu.json"
fi

echo "== stage 1: CUDA tests and odmaug CUDA smoke (device $DEVICE)"
set +e
timeout 120 "$PY" -m pytest -q -k cuda -p no:cacheprovider
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "pytest -k cuda: no tests collected (the suite has no CUDA-specific tests); the smoke below covers CUDA"
elif [[ $rc -ne 0 ]]; then
    echo "pytest -k cuda failed (exit $rc)"; exit "$rc"
fi
timeout 180 "$PY" - "$DEVICE" <<'EOF'
import sys, time
import torch
from odmaug.config import DiffusionConfig, GeneratorConfig, OrdinalConfig, SampleConfig, TrainConfig
from odmaug.diffusion import DiffusionLoss, NoiseSchedule, build_generator, sample
from odmaug.diffusion.trainer import generator_train_step
from odmaug.precision import autocast, precision_name, resolve_precision

device = torch.device(sys.argv[1])
dtype = resolve_precision("auto", device)
print(f"device {device}" + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
      + f", precision auto = {precision_name(dtype)}")
torch.manual_seed(0)
model = build_generator(GeneratorConfig(), 5, 32).to(device=device, memory_format=torch.channels_last).train()
unit = generator_train_step(model, TrainConfig(lr=1e-4, ema_warmup=0), device, dtype)  # the trainer's step
schedule = NoiseSchedule.from_config(DiffusionConfig())
g = torch.Generator().manual_seed(0)
x0 = (torch.rand(8, 3, 32, 32, generator=g) * 2 - 1).to(device).contiguous(memory_format=torch.channels_last)
labels = torch.arange(8) % 5
for name, cfg in (("DM", DiffusionConfig(ordinal=OrdinalConfig(gamma=0.0))), ("ODM", DiffusionConfig())):
    t0 = time.perf_counter()
    loss_fn = DiffusionLoss(cfg, 5)
    loss = unit(lambda: loss_fn(model, x0, labels, schedule, g)["loss"])
    assert torch.isfinite(loss), f"{name} loss not finite"
    assert all(torch.isfinite(p).all() for p in model.parameters()), f"{name}: parameters not finite"
    print(f"{name} training step ok: loss {float(loss):.4f} ({time.perf_counter() - t0:.2f} s)")
model.eval()
with torch.no_grad(), autocast(device, dtype):
    x = sample(model, torch.randn(4, 3, 32, 32, generator=g).to(device), torch.arange(4).to(device), schedule,
               SampleConfig(sampler="ddim", steps=2, guidance_scale=2.0, precision="fp32"))  # the autocast above decides
assert torch.isfinite(x).all(), "samples not finite"
print(f"guided DDIM sample ok: {tuple(x.shape)} on {x.device}")
if device.type == "cuda":
    t0 = time.perf_counter()
    compiled = torch.compile(model)
    with torch.no_grad(), autocast(device, dtype):
        xt = torch.randn(4, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        eps = compiled(xt, torch.full((4,), 500, device=device), torch.arange(4, device=device))
        ref = model(xt, torch.full((4,), 500, device=device), torch.arange(4, device=device))
    rel = float((eps.float() - ref.float()).norm() / ref.float().norm())
    assert rel < 5e-2, f"compiled vs eager eps relative error {rel:.2e}"
    print(f"compiled forward ok: rel. error vs eager {rel:.1e} ({time.perf_counter() - t0:.0f} s incl. compile)")
EOF
elapsed "stage 1"

echo "== stage 2: generator_speed.py --device $DEVICE (batch $BATCH, $ROUNDS rounds, $SAMPLING_STEPS DDIM steps/unit)"
CASES=(odmaug-train-fast odmaug-train-odm odmaug-train-compiled
       peer-train-fp32 peer-train-fp32-dropout peer-train-bf16-autocast-cl peer-train-bf16-cl peer-train-compiled
       odmaug-sample-fast odmaug-sample-compiled peer-sample-fp32 peer-sample-bf16-cl peer-sample-compiled)
timeout "$SPEED_TIMEOUT" "$PY" studies/generator_speed.py --device "$DEVICE" --batch "$BATCH" --rounds "$ROUNDS" \
    --sampling-steps "$SAMPLING_STEPS" --slow-bf16 full --compile-timeout "$COMPILE_TIMEOUT" "${COMPILE_ARGS[@]}" \
    --no-memory --no-profile --loss-steps 0 --scaling-sizes --only "${CASES[@]}" --out "$JSON"
elapsed "stage 2"
echo "wrote $JSON; total $(( $(date +%s) - START )) s"
