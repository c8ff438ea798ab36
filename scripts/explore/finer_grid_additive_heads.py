"""Exploration (not adopted): on a best-recipe IV (runs/results_auto/TASK, from the results.md
command), a finer scale grid (1-5 by 0.5) for both injections, chosen on validation and scored on
the first 100 test queries; then the heads *added to* rather than replacing their outputs.

    python scripts/explore/finer_grid_additive_heads.py capitalize
"""
import contextlib
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
import torch

import ivkit
from ivkit import load_task
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.evaluation import evaluation_prompts

task_name = sys.argv[1]
scales = [1, 1.5, 2, 2.5, 3, 3.5, 4, 5]
model = ivkit.load_model("smollm2-135m-instruct")
iv = ivkit.InstructionVector.load(f"runs/results_auto/{task_name}", model)
task = load_task(task_name)
split = task.split(0)
val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=100, seed=0, stream=3))
test = evaluation_prompts(model, task, n_prompts=100, seed=0)
fs = ivkit.score_prompts(model, test["few_shot"])
right = fs.ranks == 0
zt = test["zero_shot"]
print(task_name, "k", iv.k, "chosen", iv.injection, iv.layer, iv.scale, "nval", len(val), "ntest", len(zt), "icl-right", int(right.sum()), flush=True)
t0 = time.time()
sv = ivkit.layer_sweep(model, iv, val, scales=scales, progress=False, split="valid", injections=("residual", "heads"))
st = ivkit.layer_sweep(model, iv, zt, scales=scales, progress=False, split="test", injections=("residual", "heads"))
print("sweeps", time.time() - t0, flush=True)
b = sv.best()
print("fine-grid valid best", b, flush=True)
sc = ivkit.score_prompts(model, zt, vector=iv, layer=b.get("layer") if b["injection"] == "residual" else None,
                         scale=b["scale"], injection=b["injection"])
print("fine-grid chosen: test", sc.accuracy(1), "icl-right", float((sc.ranks[right] == 0).float().mean()), flush=True)
print("fine-grid test oracle", st.best(), flush=True)
# additive heads at own layers
g = model.geometry
def additive(scale):
    stack = contextlib.ExitStack()
    byl = {}
    for (l, h), m in zip(iv.heads, iv.head_means):
        byl.setdefault(l, []).append((h, m))
    for l, hm in byl.items():
        def pre(mod, args, hm=hm):
            x = args[0].clone()
            for h, m in hm:
                x[:, -1, h * g.d_head:(h + 1) * g.d_head] += scale * m.to(x.dtype)
            return (x,) + tuple(args[1:])
        hd = model.attn_out_proj(l).register_forward_pre_hook(pre)
        stack.callback(hd.remove)
    return stack
def score_with(prompts, ctx_fn):
    ranks = []
    for i in range(0, len(prompts), 32):
        batch = model.make_batch(prompts.input_ids[i:i + 32])
        with torch.inference_mode(), ctx_fn():
            lg = model.forward(batch)[:, -1]
        tgt = prompts.first_token[i:i + 32]
        ranks.append((lg > lg.gather(-1, tgt[:, None])).sum(-1))
    return torch.cat(ranks)
res = {}
for s in [0.5, 1, 1.5, 2, 3, 4]:
    rv = score_with(val, lambda: additive(s)); rt = score_with(zt, lambda: additive(s))
    res[s] = (float((rv == 0).float().mean()), float((rt == 0).float().mean()), float((rt[right] == 0).float().mean()))
    print("additive heads", s, res[s], flush=True)
