#!/usr/bin/env bash
# The GPU checks of issue 14, as one prepared script for a lent GPU machine (no MLflow there):
#   1. bench/cifar_fast.py (once per item of FAST_RUNS): configs/cifar10.yaml as shipped (model.name=auto: fastnet width 64
#      on a GPU), test accuracy per epoch against training wall time, goal >= 94% in <= 60 s;
#   2. bench/protocol_offline.py: the full-scale protocol (train, explain with K=128 on 2,000
#      images, the Optuna study and every control over 5 seeds, whole epochs), stage by stage.
# Python packages the machine lacks travel as wheels in .whl/ and the CIFAR-10 tarball in
# .gpu/ (both git-ignored; see the closing notes of issue 14). Logs go to $OUT (or bench/out/gpu).
#     bash bench/gpu.sh [seconds for the protocol, default 330; 0 skips it]
set -uo pipefail
OUT=${OUT:-bench/out/gpu}
mkdir -p "$OUT"
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null && ! $PY -c "import hdbscan, optuna, pytorch_grad_cam" 2>/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 I2X_CACHE_DIR=${I2X_CACHE_DIR:-/tmp/i2x-cache}
DATA=${DATA:-.gpu}
nvidia-smi -L 2>/dev/null || true
$PY -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
# FAST_RUNS: ';'-separated override lists, one training run each; an empty item is the config as shipped
IFS=';' read -ra runs <<< "${FAST_RUNS:-}"
[ ${#runs[@]} -eq 0 ] && runs=("")
i=0
for overrides in "${runs[@]}"; do
    i=$((i + 1))
    echo "== fast run $i: ${overrides:-as shipped}"
    timeout 200 $PY bench/cifar_fast.py --data-dir "$DATA" $([ $i -gt 1 ] && echo --skip-resnet) \
        ${overrides:+--overrides $overrides} 2>&1 | tee "$OUT/cifar_fast_$i.log"
done
[ "${1:-330}" = 0 ] && exit 0  # 0: the training runs only
timeout "${1:-330}" $PY bench/protocol_offline.py --config cifar10 --data-dir "$DATA" --out "$OUT/protocol.json" \
    ${PROTOCOL_OVERRIDES:+--overrides $PROTOCOL_OVERRIDES} 2>&1 | tee "$OUT/protocol.log"
