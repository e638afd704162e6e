#!/usr/bin/env bash
# The GPU measurements in one call: everything a lent GPU's minutes should go to, prepared and tested on a CPU.
#
#   tools/gpu_run.sh [--budget-s S] [--photos DIR] [--pack FILE] OUT     on a CUDA GPU (ends within S s, default 540)
#   tools/gpu_run.sh --dry-run OUT                                     the same steps on the CPU, tiny sizes (budget 180 s)
#
# In order: the GPU, driver, torch and CUDA versions; the CUDA-only tests; benchmarks/throughput.py at 256 px
# for both generators (fast path vs the reference tutorial's pipeline), then --profile of the ResNet18-UNet GAN
# step, then with --compile (images/s, ratio, peak memory, MFU against the GPU's bf16 peak); `colorlab
# experiment` at 256 px on the project's photos with as many epochs per stage as the measured throughput
# allows in the time left (tools/gpu_steps.py plan), exporting the generators into OUT/models/; chapters 5-9
# executed with papermill on those models; the grey yardstick and the exported models evaluated on the
# validation photos; OUT/summary.md. Every step runs under its own `timeout`; a failed step is recorded
# (OUT/steps.tsv, OUT/logs/STEP.log) and the next one still runs. Weights go only to OUT/models/.
#
# The photos: the device machine gets this working tree, not ../shared. Copy them into the git-ignored
# data/ first (`mkdir -p data && cp -r ../shared/data/photos data/`; ../shared/data/old-photos too for the
# old-photo figure) and let the device tool carry data/. Without DIR/photos/{train,val} (DIR = --photos,
# default data/) the script refuses to start. The dry run makes a tiny photo set from scikit-image's photos.
#
# --pack FILE: also write OUT as FILE (.tar.gz, without models/ and checkpoints), one file to bring back.
# Extra Python packages the machine lacks (fastai, papermill, ...) are installed from .whl/ when it exists.
set -u

usage() { echo "usage: tools/gpu_run.sh [--dry-run] [--budget-s SECONDS] [--photos DIR] [--pack FILE] OUT" >&2; exit 2; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMMAND="tools/gpu_run.sh $*"
DRY=0 BUDGET="" PHOTOS="" PACK="" OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --budget-s) BUDGET=${2:?--budget-s needs seconds}; shift ;;
        --photos) PHOTOS=${2:?--photos needs a folder}; shift ;;
        --pack) PACK=${2:?--pack needs a file}; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        -*) usage ;;
        *) [ -z "$OUT" ] || usage; OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || usage
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }  # before the cd below
OUT=$(absolute "$OUT")
[ -z "$PHOTOS" ] || PHOTOS=$(absolute "$PHOTOS")
[ -z "$PACK" ] || PACK=$(absolute "$PACK")
PY=${PYTHON:-python3}
cd "$REPO" || exit 2

if [ "$DRY" = 1 ]; then
    # tiny everything; TORCH_COMPILE_DISABLE: compiling on a CPU takes minutes, the dry run checks the plumbing
    BUDGET=${BUDGET:-180} SUMMARY_S=15 DEVICE=cpu SIZE=32 BATCH=4 MAX_EPOCHS=1 CHAPTER9_S=1
    BENCH=(--device cpu --size 32 --batch-size 2 --steps 1 --warmup 1 --data-steps 2 --workers 0)
    COMPILE_ENV=(env TORCH_COMPILE_DISABLE=1) COMPILE_ARCH=(--arch baseline)
    CHAPTERS=(05_baseline) CHAPTER_S=60 EVALUATE_S=45 PLAN_S=45 RUNS_S=20
    SMOKE=(--smoke) DRY_FLAG=(--dry-run)
    STEP_S=$BUDGET KEEP=0  # the steps before the plan: limited by the budget alone
    # one torch thread: on a busy CPU, two threads wait for each other's descheduled half (measured: the
    # benchmark step took 58 s with one thread, 270 s with two, on 2 cores at a load average of 15)
    export OMP_NUM_THREADS=1
else
    BUDGET=${BUDGET:-540} SUMMARY_S=25 DEVICE=cuda SIZE=256 BATCH=32 MAX_EPOCHS="" CHAPTER9_S=20
    BENCH=(--device cuda --size 256 --batch-size 32 --steps 50 --warmup 10)
    COMPILE_ENV=() COMPILE_ARCH=()
    CHAPTERS=(05_baseline 06_resnet_pretraining 07_gan_finetuning 08_evaluation 09_classification)
    CHAPTER_S=40 EVALUATE_S=25 PLAN_S=20 RUNS_S=10 SMOKE=() DRY_FLAG=()
    STEP_S="" KEEP=1  # the steps before the plan keep the later steps' share and 60 s of experiment
fi

START=$(date +%s)  # the budget counts from here: the dry run's photo making included
if [ -z "$PHOTOS" ] && [ "$DRY" = 1 ]; then
    PHOTOS=$OUT/tiny-photos
    PYTHONPATH="$REPO" "$PY" tools/gpu_steps.py photos "$PHOTOS" --make-tiny >/dev/null || exit 2
fi
PHOTOS=${PHOTOS:-$REPO/data}
if [ ! -d "$PHOTOS/photos/train" ] || [ ! -d "$PHOTOS/photos/val" ]; then
    echo "gpu_run.sh: no $PHOTOS/photos/{train,val}: copy the photos into the working tree first (mkdir -p data && cp -r ../shared/data/photos data/; data/ is git-ignored, so have the device tool carry it) or name a folder with --photos" >&2
    exit 2
fi
PHOTOS=$(cd "$PHOTOS" && pwd)
mkdir -p "$OUT/logs" || exit 2
printf 'step\tstatus\tseconds\tlimit\n' >"$OUT/steps.tsv"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg COLORLAB_SHARED_DATA="$PHOTOS"

# step NAME LIMIT RESERVE COMMAND...: run COMMAND for at most LIMIT seconds, and never into the last RESERVE
# seconds of the budget (kept for later steps) nor the summary's; record its status; never stop the script.
step() {
    local name=$1 limit=$2 reserve=$3 began left rc status
    shift 3
    left=$((BUDGET - ($(date +%s) - START) - SUMMARY_S - reserve))
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        printf '%s\t%s\t0\t%s\n' "$name" "skipped (out of budget)" "$limit" >>"$OUT/steps.tsv"
        echo "[gpu_run] $name: skipped, out of budget"
        return 0
    fi
    began=$(date +%s)
    echo "[gpu_run] $name (limit ${limit} s) ..."
    timeout -k 10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="timed out" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(($(date +%s) - began))" "$limit" >>"$OUT/steps.tsv"
    echo "[gpu_run] $name: $status in $(($(date +%s) - began)) s"
    [ "$rc" = 0 ] || tail -n 3 "$OUT/logs/$name.log" | sed 's/^/    /'
    return 0
}

# the steps after the experiment keep their share (AFTER: the runs step, the chapters, the evaluation); on the
# GPU the steps before the plan also leave the plan and at least 60 s of experiment (BEFORE_PLAN)
AFTER=$(( ${#CHAPTERS[@]} * CHAPTER_S + EVALUATE_S + RUNS_S ))
BEFORE_PLAN=$(( KEEP * (AFTER + PLAN_S + 60) ))

if compgen -G "$REPO/.whl/*.whl" >/dev/null; then  # packages the device image lacks, carried as wheels
    step wheels 60 "$BEFORE_PLAN" "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/colorlab-site \
        "$REPO"/.whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/colorlab-site"
fi

# shellcheck disable=SC2016  # expanded by the inner bash, which gets $PY as $0
step environment "${STEP_S:-40}" "$BEFORE_PLAN" bash -c '
    date -u "+%Y-%m-%d %H:%M UTC"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    else echo "nvidia-smi: not on this machine"; fi
    "$0" -c "import platform, torch; print(\"torch\", torch.__version__, \"CUDA\", torch.version.cuda, \"cuDNN\", torch.backends.cudnn.version(), \"Python\", platform.python_version()); print(\"device:\", torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"no CUDA device\")"
    "$0" -c "import colorlab, fastai, papermill; print(\"colorlab\", colorlab.__version__, \"fastai\", fastai.__version__, \"papermill\", papermill.__version__)"
    echo "photos: $(ls "$COLORLAB_SHARED_DATA/photos/train" | wc -l) train, $(ls "$COLORLAB_SHARED_DATA/photos/val" | wc -l) val in $COLORLAB_SHARED_DATA/photos"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
' "$PY"
cp "$OUT/logs/environment.log" "$OUT/environment.txt"

mapfile -t CUDA_TESTS < <(grep -l "skipif(not torch.cuda.is_available()" tests/test_*.py)
step cuda-tests "${STEP_S:-90}" "$BEFORE_PLAN" "$PY" -m pytest -q -rs -p no:cacheprovider -o addopts="" -k cuda "${CUDA_TESTS[@]}"

step throughput "${STEP_S:-120}" "$BEFORE_PLAN" "$PY" benchmarks/throughput.py "${BENCH[@]}" --json "$OUT/throughput.json"
step throughput-profile "${STEP_S:-60}" "$BEFORE_PLAN" "$PY" benchmarks/throughput.py "${BENCH[@]}" --arch resnet18 --profile \
    --json "$OUT/throughput-profile.json"
step throughput-compiled "${STEP_S:-150}" "$BEFORE_PLAN" "${COMPILE_ENV[@]}" "$PY" benchmarks/throughput.py "${BENCH[@]}" "${COMPILE_ARCH[@]}" \
    --compile --json "$OUT/throughput-compiled.json"

# the experiment gets what is left once the chapters, the evaluation and the summary have their share
EXPERIMENT_S=$((BUDGET - ($(date +%s) - START) - SUMMARY_S - AFTER - PLAN_S))
step plan "$PLAN_S" "$AFTER" "$PY" tools/gpu_steps.py plan "$OUT" --photos "$PHOTOS" --seconds "$EXPERIMENT_S" \
    --chapter9-s "$CHAPTER9_S" --size "$SIZE" --batch-size "$BATCH" --device "$DEVICE" \
    ${MAX_EPOCHS:+--max-epochs "$MAX_EPOCHS"} "${SMOKE[@]}"
step experiment "$EXPERIMENT_S" "$AFTER" "$PY" -m colorlab experiment --config "$OUT/experiment.yaml" \
    --out "$OUT/experiment" --device "$DEVICE" --export-models "$OUT/models"
step runs "$RUNS_S" $((AFTER - RUNS_S)) "$PY" tools/gpu_steps.py runs "$OUT"
for i in "${!CHAPTERS[@]}"; do
    later=$(( (${#CHAPTERS[@]} - i - 1) * 15 + EVALUATE_S ))  # each later chapter keeps 15 s at least
    step "chapter-${CHAPTERS[$i]}" "$CHAPTER_S" "$later" "$PY" tools/gpu_steps.py chapter "$OUT" "${CHAPTERS[$i]}"
done
step evaluate "$EVALUATE_S" 0 "$PY" tools/gpu_steps.py evaluate "$OUT" --device "$DEVICE"

echo "[gpu_run] summary ..."  # always, in the seconds kept for it
timeout -k 5 "$SUMMARY_S" "$PY" tools/gpu_steps.py summary "$OUT" --command "$COMMAND" \
    "${DRY_FLAG[@]}" --chapters "${CHAPTERS[@]}" >"$OUT/logs/summary.log" 2>&1 \
    || { echo "[gpu_run] summary failed:"; tail -n 3 "$OUT/logs/summary.log"; }
if [ -n "$PACK" ]; then
    tar -czf "$PACK" -C "$OUT" --exclude=./models --exclude=./experiment/checkpoints --exclude=./tiny-photos . \
        && echo "[gpu_run] packed into $PACK ($(du -h "$PACK" | cut -f1))"
fi
echo "[gpu_run] done in $(($(date +%s) - START)) s of $BUDGET: $OUT/summary.md"
