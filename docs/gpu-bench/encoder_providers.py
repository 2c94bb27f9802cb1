"""Encoder fp32 vs int8 on the CUDA provider: ms per tile and where the nodes run."""
import collections, glob, json, os, sys, time
import numpy as np
import onnxruntime as ort
from appliance.config import load_config
from appliance.glance.runtime.onnx import choose_providers, session_options
from appliance.glance.agreement import normalise_tile

cfg = load_config(None).model
print("available", ort.get_available_providers(), flush=True)
feed = {"image": normalise_tile(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))}
res = {}
for req in sys.argv[1].split(";"):
    for variant in ("fp32", "int8"):
        provs = choose_providers(req, ort.get_available_providers(), cfg)
        so = session_options(cfg)
        so.enable_profiling = True
        so.profile_file_prefix = f"/tmp/prof_{variant}_{req.replace(',', '_')}"
        try:
            s = ort.InferenceSession(f"models/litemedsam_encoder_{variant}.onnx", sess_options=so,
                                     providers=[p for p, _ in provs], provider_options=[o for _, o in provs])
        except Exception as exc:
            print(req, variant, "FAILED", repr(exc)[:300], flush=True); continue
        for _ in range(3):
            s.run(None, feed)
        times = []
        for _ in range(10):
            t = time.perf_counter(); s.run(None, feed); times.append((time.perf_counter() - t) * 1e3)
        prof = s.end_profiling()
        by = collections.Counter(); us = collections.Counter()
        for ev in json.load(open(prof)):
            if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
                key = (ev["args"].get("provider"), ev["args"].get("op_name"))
                by[key] += 1; us[key] += ev["dur"]
        key = f"{req}/{variant}"
        res[key] = {"providers": s.get_providers(), "ms_median": round(float(np.median(times)), 2),
                    "ms_min": round(min(times), 2),
                    "us_per_run": {f"{p}:{o}": [by[(p, o)] // 13, round(us[(p, o)] / 13)] for (p, o) in sorted(us, key=lambda k: -us[k])[:10]},
                    "nodes_per_provider": {p: sum(v for (q, _), v in by.items() if q == p) // 13 for p in {k[0] for k in by}}}
        print(key, json.dumps(res[key]), flush=True)
json.dump(res, open(os.path.join(os.environ.get("OUT", "/tmp"), "encoder_cuda_int8.json"), "w"), indent=1)
