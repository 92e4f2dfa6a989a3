#!/usr/bin/env bash
# The GPU checks of the mujoco_warp backend in one go, for a machine with an NVIDIA GPU:
# the backend's tests on the device, the benchmarks (pd, a PARC-size policy, the sampling
# tracker) and one record job of thousands of PARC motions with PARC's policy.
#
#   bash scripts/gpu_check.sh [OUT] [DEVICE]        (defaults: gpu-check, cuda:0)
#
# Needs physrec with the gpu extra (pip install -e ".[gpu]") and PARC's sample files in
# PARC_SAMPLES (default ../shared/parc_samples; PARC_MODEL: the policy checkpoint, else one
# of its size with random weights). STEPS chooses and orders the steps (default "info pd
# det tests parc batch sampling"). Each step has its own time limit, LIMIT_<step> seconds (540 s
# in all by default, to fit one 10-minute call), so that a slow one cannot take the others'
# time. PD_ENVS, DET_ENVS, PARC_ENVS, BATCH_MOTIONS and SAMPLES change the sizes (a trial run on
# Warp's CPU device: DEVICE cpu and tiny sizes). Writes OUT/<step>.log, the figures as
# OUT/gpu-<device name>-<step>.json (and .png), and OUT/summary.txt (each step's exit status
# and seconds). Keep the figures in docs/bench/ with the device's name.
set -uo pipefail

out="${1:-gpu-check}"
dev="${2:-cuda:0}"
samples="${PARC_SAMPLES:-../shared/parc_samples}"
steps="${STEPS:-info pd det tests parc batch sampling}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
teaser="$samples/TEASER_TERRAIN.pkl"
civ="$samples/civilization.pkl"
# PARC's trained policy for the batch step; where it is absent, one of its size with random weights
model="${PARC_MODEL:-$samples/oracle/model_seed1.pt}"
[ -f "$model" ] || model=random
pd_envs="${PD_ENVS:-1024,4096,16384}"
parc_envs="${PARC_ENVS:-1024,4096}"
det_envs="${DET_ENVS:-4096}"
batch_motions="${BATCH_MOTIONS:-4096}"
samples_per_window="${SAMPLES:-4096,auto}"

gpu="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
name="$(echo "${gpu:-no-gpu}" | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z' | sed 's/-\+/-/g; s/^-//; s/-$//')"
echo "== device: ${gpu:-none found by nvidia-smi} ($dev); figures as $out/gpu-$name-*" | tee "$out/summary.txt"

run_step() {  # run_step NAME DEFAULT_LIMIT COMMAND...
  local step="$1" default="$2"
  shift 2
  local limit_var="LIMIT_$step"
  local limit="${!limit_var:-$default}"
  echo "== $step (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$out/$step.log" 2>&1
  local rc=$?
  tail -n 40 "$out/$step.log"
  echo "== $step: exit $rc in $((SECONDS - start)) s" | tee -a "$out/summary.txt"
}

for step in $steps; do
  case "$step" in
    info)
      run_step info 20 bash -c 'nvidia-smi; python -c "
import sys, torch, warp, mujoco, mujoco_warp
warp.init()
print(sys.version.split()[0], \"torch\", torch.__version__, torch.cuda.is_available(), \"warp\", warp.__version__,
      \"mujoco\", mujoco.__version__, \"mujoco_warp\", mujoco_warp.__version__)
print([(d.alias, d.name) for d in warp.get_devices()])"' ;;
    pd)  # raw MuJoCo Warp and the recorder with pd, at several world counts (the first compiles the kernels)
      run_step pd 150 python -m physrec bench throughput --backend mujoco_warp --device "$dev" --envs "$pd_envs" \
        --repeats 2 --motions "$teaser" "$civ" --json "$out/gpu-$name-pd.json" --plot "$out/gpu-$name-pd.png" ;;
    det)  # what MuJoCo Warp's deterministic execution costs (config key deterministic), at one size
      run_step det 60 python -m physrec bench throughput --backend mujoco_warp --device "$dev" --envs "$det_envs" --deterministic \
        --repeats 2 --motions "$teaser" "$civ" --json "$out/gpu-$name-pd-deterministic.json" ;;
    tests)  # the agreement and overflow tests, on the GPU instead of Warp's CPU device
      run_step tests 110 env PHYSREC_TEST_WARP_DEVICE="$dev" python -m pytest -q -p no:cacheprovider \
        tests/test_warp_backend.py ;;
    parc)  # the recorder with a PARC-size policy (random weights), observation and policy on the GPU
      run_step parc 50 python -m physrec bench throughput --backend mujoco_warp --device "$dev" --envs "$parc_envs" --repeats 2 \
        --tracker parc --motions "$teaser" "$civ" --json "$out/gpu-$name-parc.json" ;;
    batch)  # one record job of thousands of PARC motions with PARC's own policy, every phase timed in its log
      run_step batch 80 python -m physrec bench batch --motions "$batch_motions" --files "$teaser" "$civ" \
        --backend mujoco_warp --device "$dev" --tracker parc --model "$model" --dir /tmp/physrec-gpu-batch ;;
    sampling)  # the sampling tracker, one sample per world: how far more samples take civilization
      # (first), then TEASER_TERRAIN; the JSON grows after each
      run_step sampling 70 python -m physrec bench sampling --backend mujoco_warp --device "$dev" \
        --samples "$samples_per_window" --later-starts --verbose --motions "$civ" "$teaser" --json "$out/gpu-$name-sampling.json" ;;
    *) echo "== unknown step $step (known: info pd det tests parc batch sampling)" | tee -a "$out/summary.txt" ;;
  esac
done
cat "$out/summary.txt"
