"""Exploration (not adopted): the heads injection at every position instead of the last token,
scored on validation and on the whole test split.

    python scripts/explore/heads_every_position.py choose_first_of_3
"""
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")
import torch

import ivkit
from ivkit import load_task
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.evaluation import evaluation_prompts

t = sys.argv[1]
model = ivkit.load_model("smollm2-135m-instruct")
iv = ivkit.InstructionVector.load(f"runs/results_auto/{t}", model)
split = load_task(t).split(0)
val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=100, seed=0, stream=3))
zt = evaluation_prompts(model, t, n_prompts=1000, seed=0)["zero_shot"]
def acc(prompts, **kw):
    r = []
    for i in range(0, len(prompts), 32):
        with torch.inference_mode(), iv.apply(model, **kw):
            lg = model.forward(model.make_batch(prompts.input_ids[i:i+32]))[:, -1]
        tg = prompts.first_token[i:i+32]
        r.append((lg > lg.gather(-1, tg[:, None])).sum(-1))
    return float((torch.cat(r) == 0).float().mean())
print(t, iv.injection, iv.layer, iv.scale, flush=True)
print("own cell last-pos: valid", acc(val), "test", acc(zt), flush=True)
for s in [0.5, 1, 2, 3]:
    print("heads all positions scale", s, "valid", acc(val, injection="heads", scale=s, positions=slice(None)), "test", acc(zt, injection="heads", scale=s, positions=slice(None)), flush=True)
