#!/bin/bash
# The CUDA run of `glanceseg bench` (issue #8, point 4) on a lent GPU machine, as it was run
# on 2026-11-27 (NVIDIA H200, onnxruntime-gpu 1.31.1, Python 3.12). See README.md here.
#
#   stage: keep what this call carried (.whl, .gpu1, .gpu2, .gpu3) under /tmp/stage, which
#          outlives the call while the machine stays warm, and unpack onnxruntime-gpu
#   probe: versions, CUDA libraries, a CUDA session on a small model checked against the CPU
#   bench: the bench with [model] providers = "cuda" and the fp32 files, JSON into $OUT
#   auto:  the quick bench with the default config, checking stdout stays one JSON object
#
# On an ordinary CUDA machine none of the staging is needed:
#   pip install onnxruntime-gpu && GLANCESEG_MODEL_PROVIDERS=cuda glanceseg bench --json
export PYTHONUNBUFFERED=1
S=/tmp/stage; mkdir -p $S /tmp/site
for d in .whl .gpu1 .gpu2 .gpu3; do [ -d $d ] && cp -r --update=none $d/. $S/; done
if [ ! -d /tmp/site/onnxruntime ] && [ -f $S/ort.tar.xz ]; then
  python3 -c "import tarfile; tarfile.open('$S/ort.tar.xz').extractall('/tmp/site')"
  # onnxruntime.quantization (the bench's matmul-rate model) imports onnxruntime.transformers,
  # which the slimmed package left out; the machine's own onnxruntime has the same Python files
  cp -r /opt/torch/.venv/lib/python3.12/site-packages/onnxruntime/transformers /tmp/site/onnxruntime/
fi
for w in $S/*.whl; do [ -f "$w" ] && python3 -m pip install -q --no-index --no-deps --target /tmp/site "$w"; done
export LD_LIBRARY_PATH=$(find /opt /usr/local /usr/lib -xdev \( -name 'libcublasLt.so.13' -o -name 'libcudnn.so.9' \
  -o -name 'libcudart.so.13' -o -name 'libcurand.so.10' -o -name 'libcufft.so.12' \) -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
export PYTHONPATH=/tmp/site:$PWD
for step in "$@"; do case $step in
probe)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; python3 --version
  python3 -c "import onnxruntime as o, numpy, cv2; print(o.__version__, o.get_available_providers(), numpy.__version__, cv2.__version__)"
  ;;
bench)
  cp --update=none $S/*.onnx models/
  printf '[model]\nproviders = "cuda"\nvariant = "fp32"\n' > /tmp/cuda.toml
  # run_benchmark directly: the glanceseg command imports every subcommand, and the machine
  # lacks `cryptography` (model bundles), which the bench does not use
  timeout ${BENCH_S:-440} python3 -c "
import json, logging; logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
from pathlib import Path; from appliance.config import load_config; from appliance.glance.bench import run_benchmark
c = Path('/tmp/cuda.toml')
print(json.dumps(run_benchmark(load_config(c), dataset=Path('$S/idrid-ma'), quick=${QUICK:-False}, config_path=c)))" \
    > $OUT/bench_cuda.json 2> $OUT/bench_cuda.log
  echo "bench rc=$?"; cat $OUT/bench_cuda.json
  ;;
auto)
  # the defaults (providers = "auto", variant = "auto"), quick: stdout must stay one JSON
  # object although onnxruntime falls back from the listed, uninstalled TensorRT provider
  cp --update=none $S/*.onnx models/
  timeout ${BENCH_S:-300} python3 -c "
import json, logging; logging.basicConfig(level=logging.WARNING, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
from pathlib import Path; from appliance.config import load_config; from appliance.glance.bench import run_benchmark
print(json.dumps(run_benchmark(load_config(None), dataset=Path('$S/idrid-ma'), quick=True)))" \
    > $OUT/bench_auto.json 2> $OUT/bench_auto.log
  echo "auto rc=$?"; cat $OUT/bench_auto.json
  python3 -c "import json; d = json.load(open('$OUT/bench_auto.json')); print('one JSON object:', d['execution_providers'], d['model_variant'], d['encoder_ms'])"
  grep -c "Falling back" $OUT/bench_auto.log
  ;;
esac; done
