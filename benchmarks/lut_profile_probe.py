"""Probe (issue 17): onnxruntime per-node profile of one default-space subnet at 2 threads, batch 4; prints
wall vs profiled run times and the first nodes with their times (us).  python benchmarks/lut_profile_probe.py"""
import collections
import json
import random
import time

import onnxruntime as ort
import torch

from slimformer.latency_lut import export_onnx
from slimformer.supernet import EfficientFormerNet, get_space

sp = get_space("default")
cfg = sp.sample(random.Random(5))
net = EfficientFormerNet(cfg).eval()
x = torch.randn(4,3,sp.img_size,sp.img_size)
b = export_onnx(net, (x,))
so = ort.SessionOptions(); so.intra_op_num_threads=2; so.inter_op_num_threads=1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
so.enable_profiling=True; so.profile_file_prefix="/tmp/sf-profile-probe"
s = ort.InferenceSession(b, so, providers=["CPUExecutionProvider"])
feeds={s.get_inputs()[0].name: x.numpy()}
for _ in range(3): s.run(None, feeds)
t=[]
for _ in range(10):
    a=time.perf_counter(); s.run(None, feeds); t.append((time.perf_counter()-a)*1e3)
f = s.end_profiling()
with open(f) as fh:
    ev = json.load(fh)
names = collections.Counter(); 
runs = [e for e in ev if e.get("name")=="model_run"]
print("wall ms", sorted(t)[5], "model_run ms", [r["dur"]/1e3 for r in runs][-3:])
nodes=[e for e in ev if e.get("cat")=="Node" and e["name"].endswith("_kernel_time")]
print(len(nodes)/13)
print(json.dumps(nodes[0])[:600])
for e in nodes[:int(len(nodes)/13)]: print(e["name"], e["dur"], e["args"].get("op_name"))
