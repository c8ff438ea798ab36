"""Exploration: choose the IV's heads greedily for what the IV is for, zero-shot accuracy, instead of
taking the top k of a ranking.

Candidates: the 15 best heads by the usual AIE (shuffled 10-shot, runs/results_auto/TASK) and the
15 best by the zero-shot indirect effect (each head alone at 1 x its mean on zero-shot training
prompts; see zero_shot_ranking.py). For each scale given (a comma list; default 3), heads are added one at a time: the
head whose heads injection (every chosen head set to scale x its clean 10-shot mean) gives the best
top-1 (then mean answer probability) on 100 zero-shot *training* queries, until no head improves
it or 8 are chosen. Every prefix of every path, at every scale, is then scored on the validation
split, the best is chosen there, and that one choice is scored on the whole test split.

    python scripts/explore/greedy_heads.py choose_first_of_3 3

Run to the end on choose_first_of_3 at scale 3 (2026-11-23, 12 min for the path alone on the
two-core machine): path 20.5 15.0 18.2 20.1 15.2 24.4, selection top-1 0.36 0.66 0.72 0.75 0.78
0.81; validation chose all six heads (0.811); whole test split 0.867 on all queries, 0.872 on the
203 the model answers right with 10 clean shots. It became ``extract(selection="greedy")`` /
``ivkit extract --select greedy`` (which adds the validation sweep's own choice of cells).
"""
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
from _setup import setup  # noqa: E402

import ivkit  # noqa: E402
from ivkit.core.prompts import (
    encode_prompts,
    sample_prompts,  # noqa: E402
)

task_name = sys.argv[1]
scales = [float(x) for x in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["3"])]
S = setup(task_name)
model, mean_acts, val, zs_rank, zt, mask = S.model, S.mean_acts, S.val, S.zs_train, S.test, S.icl_right
sel = encode_prompts(model, sample_prompts(S.split.train, style="zero_shot", n=100, seed=0, stream=13))
print("selection n", len(sel), "valid n", len(val), "test n", len(zt), "ICL-right", int(mask.sum()), flush=True)

shuffled = ivkit.IndirectEffects.load(f"runs/results_auto/{task_name}/indirect_effects.json")
zero = ivkit.indirect_effects(model, zs_rank, mean_acts, progress=False)
pool = []
for eff in (shuffled, zero):
    for l, h, _ in eff.top_heads(15):
        if (l, h) not in pool:
            pool.append((l, h))
print("pool", len(pool), " ".join(f"{l}.{h}" for l, h in pool), flush=True)


def score(prompts, heads, scale):
    iv = ivkit.InstructionVector.build(model, mean_acts, heads=heads, task=task_name, injection="heads", scale=scale)
    s = ivkit.score_prompts(model, prompts, vector=iv, batch_size=64)
    return float((s.ranks == 0).float().mean()), float(s.probs.mean()), s


paths = {}
for sc in scales:
    t0 = time.time()
    chosen, best = [], (-1.0, -1.0)
    while len(chosen) < 8:
        trials = [(score(sel, chosen + [hd], sc)[:2], hd) for hd in pool if hd not in chosen]
        (acc, prob), hd = max(trials)
        if (acc, prob) <= best:
            break
        chosen.append(hd)
        best = (acc, prob)
        print(f"  scale {sc}: + {hd[0]}.{hd[1]} -> selection top1 {acc:.3f} prob {prob:.3f}", flush=True)
    paths[sc] = chosen
    print(f"scale {sc}: path {' '.join(f'{l}.{h}' for l, h in chosen)} ({time.time() - t0:.0f} s)", flush=True)

cells = []
for sc, path in paths.items():
    for n in range(1, len(path) + 1):
        acc, prob, _ = score(val, path[:n], sc)
        cells.append(((acc, prob, -n, -sc), sc, path[:n]))
(key, sc, heads) = max(cells)[:3]
print(f"chosen on validation: scale {sc}, {len(heads)} heads {' '.join(f'{l}.{h}' for l, h in heads)}, "
      f"valid top1 {key[0]:.3f}", flush=True)
_, _, s = score(zt, heads, sc)
r = s.ranks == 0
print("test all / ICL-right", float(r.float().mean()), float(r[mask].float().mean()), flush=True)
