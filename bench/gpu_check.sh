#!/usr/bin/env bash
# The one prepared GPU check: install, versions, `pytest -m gpu`, `decal bench` (every mode,
# one process), and a one-page summary.md, all under one output folder, stopping by itself
# within --total seconds (default 470, under 8 minutes) whatever fails or hangs.
# How to run it and what it writes: bench/README.md.
#
#   bash bench/gpu_check.sh [options] [OUT]      (OUT: argument, or the OUT environment variable)
#
# Options:
#   --cpu / --gpu              force the mode (default: gpu when nvidia-smi lists a GPU, else cpu)
#   --total S                  whole-run limit in seconds (default 470)
#   --per-test-timeout S       per-test limit of the pytest step (default 60 gpu, 30 cpu)
#   --bench-images N           images in the generated bench dataset (default 256 gpu, 8 cpu)
#   --bench-batches N          timed batches per GPU bench mode (default 30)
#   --bench-cpu-batches N      timed batches per CPU bench mode (default 8 gpu, 1 cpu)
#   --bench-data DIR           bench dataset folder (default /tmp/decal-bench-data-N)
# Environment: PYTHON (default python3); GPU_CHECK_PYTEST_ARGS (replaces the test selection);
#   GPU_CHECK_BUDGET_INSTALL / _VERSIONS / _PYTEST / _BENCH (a step's seconds);
#   GPU_CHECK_COMMIT (the commit to record where the tree is a copy without .git);
#   GPU_CHECK_INJECT="step:fail step:hang ..." (replaces those steps' commands by `false` or a
#   sleep: tests/test_gpu_check.py proves a failed or hung step is reported and the run ends).
# Exit status: 0 every step ok, 1 a step failed or timed out, 2 a usage error.
set -u

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }  # the header above
die_usage() { echo "gpu_check: $1; run bash bench/gpu_check.sh --help" >&2; exit 2; }

MODE=auto
OUT_DIR=${OUT:-}
TOTAL=470
PER_TEST=
IMAGES=
BATCHES=30
CPU_BATCHES=
DATA=
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --cpu) MODE=cpu ;;
    --gpu) MODE=gpu ;;
    --total|--per-test-timeout|--bench-images|--bench-batches|--bench-cpu-batches|--bench-data)
      [ $# -ge 2 ] || die_usage "$1 needs a value"
      case "$1" in
        --total) TOTAL=$2 ;; --per-test-timeout) PER_TEST=$2 ;; --bench-images) IMAGES=$2 ;;
        --bench-batches) BATCHES=$2 ;; --bench-cpu-batches) CPU_BATCHES=$2 ;; --bench-data) DATA=$2 ;;
      esac
      shift ;;
    -*) die_usage "unknown option $1" ;;
    *) OUT_DIR=$1 ;;
  esac
  shift
done
[ -n "$OUT_DIR" ] || die_usage "give the output folder as an argument or in \$OUT"
for n in "$TOTAL" ${PER_TEST:+"$PER_TEST"} ${IMAGES:+"$IMAGES"} "$BATCHES" ${CPU_BATCHES:+"$CPU_BATCHES"}; do
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -gt 0 ] || die_usage "'$n' is not a positive whole number"
done

START=$(date +%s)
DEADLINE=$((START + TOTAL))
SUMMARY_RESERVE=15   # seconds kept for the summary
KILL_GRACE=5         # seconds between TERM and KILL of a timed-out step
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT_DIR" 2>/dev/null || die_usage "cannot create the output folder $OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)   # relative to where the command was given
cd "$ROOT" || exit 2
PY=${PYTHON:-python3}
INJECT=${GPU_CHECK_INJECT:-}

if [ "$MODE" = auto ]; then
  if timeout 20 nvidia-smi -L 2>/dev/null | grep -q '^GPU ' ||
     timeout 60 "$PY" -c "import cupy, sys; sys.exit(cupy.cuda.runtime.getDeviceCount() < 1)" 2>/dev/null; then
    MODE=gpu
  else
    MODE=cpu
  fi
fi
if [ "$MODE" = gpu ]; then
  PER_TEST=${PER_TEST:-60}; IMAGES=${IMAGES:-256}; CPU_BATCHES=${CPU_BATCHES:-8}
  BUDGET_INSTALL=90; BUDGET_VERSIONS=60; BUDGET_PYTEST=170; BUDGET_BENCH=230
else
  PER_TEST=${PER_TEST:-30}; IMAGES=${IMAGES:-8}; CPU_BATCHES=${CPU_BATCHES:-1}
  BUDGET_INSTALL=90; BUDGET_VERSIONS=60; BUDGET_PYTEST=120; BUDGET_BENCH=120
fi
DATA=${DATA:-/tmp/decal-bench-data-$IMAGES}
BUDGET_INSTALL=${GPU_CHECK_BUDGET_INSTALL:-$BUDGET_INSTALL}; BUDGET_VERSIONS=${GPU_CHECK_BUDGET_VERSIONS:-$BUDGET_VERSIONS}
BUDGET_PYTEST=${GPU_CHECK_BUDGET_PYTEST:-$BUDGET_PYTEST}; BUDGET_BENCH=${GPU_CHECK_BUDGET_BENCH:-$BUDGET_BENCH}

printf 'name\tstatus\trc\tseconds\tbudget\n' > "$OUT_DIR/steps.tsv"
ANY_BAD=0

# run_step NAME BUDGET CMD...: CMD under `timeout` (TERM, then KILL after KILL_GRACE), at most
# BUDGET seconds and never past the deadline less the summary's reserve; output to NAME.log;
# one line in steps.tsv. Returns CMD's status (124 / 137: timed out).
run_step() {
  local name=$1 budget=$2 now left rc status t0 t1
  shift 2
  now=$(date +%s)
  left=$((DEADLINE - SUMMARY_RESERVE - KILL_GRACE - now))
  if [ "$left" -lt 5 ]; then
    echo "gpu_check: no time left for $name" >> "$OUT_DIR/$name.log"
    printf '%s\tskipped\t-\t0\t%s\n' "$name" "$budget" >> "$OUT_DIR/steps.tsv"
    ANY_BAD=1
    return 124
  fi
  [ "$budget" -gt "$left" ] && budget=$left
  case " $INJECT " in
    *" $name:fail "*) set -- false ;;
    *" $name:hang "*) set -- sleep 100000 ;;
  esac
  echo "gpu_check: $name (limit ${budget}s): $*" | cut -c1-2000 >> "$OUT_DIR/$name.log"
  t0=$(date +%s.%N)
  # `timeout` leads its own process group; whatever of it outlives the step (the workers of a
  # process the per-test watchdog ended) is killed, so it holds no GPU memory or core later.
  timeout -k "$KILL_GRACE" "$budget" "$@" >> "$OUT_DIR/$name.log" 2>&1 < /dev/null &
  local pid=$!
  wait "$pid"
  rc=$?
  kill -KILL -- "-$pid" 2>/dev/null
  t1=$(date +%s.%N)
  case $rc in 0) status=ok ;; 124|137) status=timed_out ;; *) status=failed ;; esac
  [ "$status" = ok ] || ANY_BAD=1
  printf '%s\t%s\t%s\t%.1f\t%s\n' "$name" "$status" "$rc" "$(awk "BEGIN { print $t1 - $t0 }")" "$budget" >> "$OUT_DIR/steps.tsv"
  echo "gpu_check: $name $status (rc $rc)"
  return $rc
}

# ---------------------------------------------------------------- 1. install
# The editable install (skipped when decal already imports from this tree); if pip cannot
# (no setuptools on the machine), a package folder of links lets every later step import
# decal from this tree (versions.txt then shows that pythonpath).
install() {
  # Wheels carried in .whl/ (e.g. grpcio and protobuf newer than the machine's: bench/README.md)
  # go into the first PYTHONPATH folder, where the unpacked DALI lives.
  local wheels=("$ROOT"/.whl/*.whl) site=${PYTHONPATH%%:*}
  if [ -e "${wheels[0]}" ] && [ -n "$site" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "${wheels[@]}" || return 1
    echo "gpu_check: installed ${#wheels[@]} carried wheels into $site"
  fi
  if "$PY" -c "import decal, os, sys; sys.exit(os.path.dirname(decal.__file__) != '$ROOT/decal')" 2>/dev/null; then
    echo "gpu_check: decal is already installed from $ROOT"
    return 0
  fi
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . && return 0
  local pkg=/tmp/decal-linked-$$
  echo "gpu_check: editable install failed; importing decal through links in $pkg"
  mkdir -p "$pkg/decal" || return 1
  ln -sf "$ROOT"/decal/*.py "$pkg/decal/" || return 1
  for sub in kernels dali_pipes server proto trainers bench; do ln -sfn "$ROOT/$sub" "$pkg/decal/$sub"; done
  PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import decal.kernels, decal.cli" || return 1
  echo "$pkg" > "$OUT_DIR/.pythonpath"
}
run_step install "$BUDGET_INSTALL" bash -c "$(declare -f install); PY='$PY' ROOT='$ROOT' OUT_DIR='$OUT_DIR' install"
if [ -f "$OUT_DIR/.pythonpath" ]; then
  export PYTHONPATH="$(cat "$OUT_DIR/.pythonpath")${PYTHONPATH:+:$PYTHONPATH}"
  rm -f "$OUT_DIR/.pythonpath"
fi

# ---------------------------------------------------------------- 2. versions
{
  echo "mode: $MODE"
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  if [ -n "${GPU_CHECK_COMMIT:-}" ]; then
    echo "commit: $GPU_CHECK_COMMIT"
  elif commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
    echo "commit: $commit$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  else
    echo "commit: unknown (no git checkout here; set GPU_CHECK_COMMIT)"
  fi
  echo "total_budget_s: $TOTAL"
  echo "cpu_cores: $(nproc)"
  echo "pythonpath: ${PYTHONPATH:-}"
} > "$OUT_DIR/versions.txt"
PYEOF_VERSIONS='
import importlib, platform, subprocess, sys
out = open(sys.argv[1], "a")
def put(key, value):
    out.write(f"{key}: {value}\n"); out.flush()
put("python", platform.python_version())
for key, module in [("decal", "decal"), ("dali", "nvidia.dali"), ("cupy", "cupy"), ("torch", "torch"),
                    ("torchvision", "torchvision"), ("numpy", "numpy"), ("opencv", "cv2"),
                    ("pycocotools", "pycocotools"), ("imgviz", "imgviz"), ("kornia", "kornia"),
                    ("grpcio", "grpc"), ("fastapi", "fastapi"), ("hypothesis", "hypothesis")]:
    try:
        m = importlib.import_module(module)
        put(key, getattr(m, "__version__", "present") + (f" ({m.__file__})" if key == "decal" else ""))
    except Exception as error:
        put(key, f"missing ({type(error).__name__}: {error})")
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=20)
    put("driver", smi.stdout.strip().replace("\n", "; ") or f"nvidia-smi rc {smi.returncode}")
except Exception as error:
    put("driver", f"no nvidia-smi ({type(error).__name__})")
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    names = [cupy.cuda.runtime.getDeviceProperties(i)["name"] for i in range(n)]
    names = [x.decode() if isinstance(x, bytes) else str(x) for x in names]
    put("cuda_devices", n)
    put("device", names[0] if names else "none (CPU only)")
    put("cuda_runtime", cupy.cuda.runtime.runtimeGetVersion())
except Exception as error:
    put("cuda_devices", 0)
    put("device", f"none (CPU only; {type(error).__name__})")
'
run_step versions "$BUDGET_VERSIONS" "$PY" -c "$PYEOF_VERSIONS" "$OUT_DIR/versions.txt"

# ---------------------------------------------------------------- 3. pytest
# `pytest -m gpu` (no -x), a per-test limit (tests/conftest.py), JUnit XML + -v log per run.
# A test that hangs past the limit ends its process (the watchdog); the run then resumes once
# more per hang, deselecting what is done, while the step's budget lasts (at most 3 runs).
if [ -n "${GPU_CHECK_PYTEST_ARGS:-}" ]; then
  read -r -a SELECTION <<< "$GPU_CHECK_PYTEST_ARGS"
elif [ "$MODE" = gpu ]; then
  SELECTION=(-m gpu)
else
  SELECTION=(tests/test_gpu_summary.py tests/test_rasterize_gpu.py)
fi
PYTEST_END=$(( $(date +%s) + BUDGET_PYTEST ))
for n in 1 2 3; do
  budget=$((PYTEST_END - $(date +%s)))
  [ "$budget" -ge 10 ] || break
  DESELECT=()
  if [ "$n" -gt 1 ]; then
    while IFS= read -r id; do [ -n "$id" ] && DESELECT+=(--deselect "$id"); done \
      < <(timeout 30 "$PY" bench/gpu_summary.py --done-nodeids "$OUT_DIR")
  fi
  run_step "pytest-$n" "$budget" "$PY" -m pytest -v -p no:cacheprovider --continue-on-collection-errors \
    -o junit_family=xunit1 --junitxml "$OUT_DIR/junit-$n.xml" --per-test-timeout "$PER_TEST" \
    "${SELECTION[@]}" "${DESELECT[@]}"
  grep -qE 'Timeout \([0-9]+:[0-9]{2}:[0-9]{2}(\.[0-9]+)?\)!' "$OUT_DIR/pytest-$n.log" 2>/dev/null || break  # the watchdog fired
done

# ---------------------------------------------------------------- 4. bench
if [ "$MODE" = gpu ]; then
  BENCH_ARGS=(--num-images "$IMAGES" --batch-size 64 --batches "$BATCHES" --cpu-batch-size 16
              --cpu-batches "$CPU_BATCHES" --threads "$(nproc)" --host-workers "1,4,$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))"
              --modes decode_gpu,pipeline_gpu,kernels,peers,host,pipeline_cpu,pipeline_cpu_gpumasks,baseline,masks)
else
  BENCH_ARGS=(--cpu --num-images "$IMAGES" --cpu-batch-size 2 --cpu-batches "$CPU_BATCHES" --warmup 0
              --output-size 64 --threads 1 --modes pipeline_cpu,baseline,masks)
fi
run_step bench "$BUDGET_BENCH" "$PY" -m decal.cli bench --data "$DATA" --out "$OUT_DIR/bench" "${BENCH_ARGS[@]}"

# ---------------------------------------------------------------- 5. summary
if ! timeout -k 2 "$SUMMARY_RESERVE" "$PY" bench/gpu_summary.py "$OUT_DIR" > "$OUT_DIR/summary.log" 2>&1; then
  ANY_BAD=1
  {
    echo "# decal GPU check — summary generator failed"
    echo
    echo "bench/gpu_summary.py failed (see summary.log); the steps as recorded:"
    echo
    sed 's/\t/ | /g; s/^/| /; s/$/ |/' "$OUT_DIR/steps.tsv"
  } > "$OUT_DIR/summary.md"
fi
echo "gpu_check: $MODE mode, $(( $(date +%s) - START )) s; summary: $OUT_DIR/summary.md"
exit $ANY_BAD
