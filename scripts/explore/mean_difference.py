"""Exploration (not adopted): the IV's heads' ICL mean minus their zero-shot mean (100 zero-shot
train prompts) against the full mean, both injected after one layer; layer and scale chosen on
validation, scored on the whole test split.

    python scripts/explore/mean_difference.py capitalize
"""
import dataclasses
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
import torch

import ivkit
from ivkit import load_task
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.evaluation import evaluation_prompts
from ivkit.vectors import head_contributions

task_name = sys.argv[1]
model = ivkit.load_model("smollm2-135m-instruct")
iv = ivkit.InstructionVector.load(f"runs/results_auto/{task_name}", model)
task = load_task(task_name); split = task.split(0)
val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=100, seed=0, stream=3))
zs_train = encode_prompts(model, sample_prompts(split.train, style="zero_shot", n=100, seed=0, stream=11))
zt = evaluation_prompts(model, task, n_prompts=1000, seed=0)["zero_shot"]
zmean = ivkit.mean_head_activations(model, zs_train, progress=False)
hm = torch.stack([m for m in iv.head_means])
zm = torch.stack([zmean[l, h] for l, h in iv.heads])
full = torch.zeros_like(zmean); dl = torch.zeros_like(zmean)
for (l, h), a, b in zip(iv.heads, hm, zm):
    full[l, h] = a; dl[l, h] = a - b
v_full = head_contributions(model, full, iv.heads).sum(0)
v_delta = head_contributions(model, dl, iv.heads).sum(0)
print(task_name, "k", iv.k, iv.injection, "check full==iv.vector", float((v_full - iv.vector).abs().max()), "norms", float(iv.vector.norm()), float(v_delta.norm()), flush=True)
scales = [1, 2, 3, 4, 6, 8]
for name, vec in [("full", v_full), ("delta", v_delta)]:
    iv2 = dataclasses.replace(iv, vector=vec, injection="residual", layer=None)
    t0 = time.time()
    sv = ivkit.layer_sweep(model, iv2, val, scales=scales, progress=False, split="valid", injections=("residual",))
    b = sv.best()
    sc = ivkit.score_prompts(model, zt, vector=vec, layer=b["layer"], scale=b["scale"])
    print(name, "valid best", b, "test(all %d)" % len(zt), sc.accuracy(1), "secs", time.time() - t0, flush=True)
