"""Exploration, adopted as `ivkit extract --ranking zero_shot|both`: rank heads by their indirect
effect on *zero-shot* prompts (the IV's use) instead of on shuffled 10-shot prompts, then build the
IV from the same mean activations as usual.

Each head is patched, alone, to ``s *`` its clean 10-shot mean at the last token of 100
zero-shot *training* prompts (s = 1 and s = 3), and its effect is the mean rise in P(first answer
token). k (3, 5, 10, 20), the injection, layer and scale are chosen on the validation split exactly
as `ivkit extract --top-k 3,5,10,20 --injection auto` does; the choice is scored once on the whole
test split (all queries and those clean 10-shot gets right). The saved best-recipe IV
(runs/results_auto/TASK) is scored on the same queries for comparison.

    python scripts/explore/zero_shot_ranking.py choose_first_of_3      # patch to 1 x and 3 x the mean
    python scripts/explore/zero_shot_ranking.py capitalize 1           # 1 x only (what --ranking uses)
"""
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")
from _setup import setup  # noqa: E402

import ivkit  # noqa: E402

task_name = sys.argv[1]
scales_rank = [float(s) for s in (sys.argv[2].split(",") if len(sys.argv) > 2 else ["1", "3"])]
ks = [3, 5, 10, 20]
S = setup(task_name)
model, mean_acts, val, zs_train, zt, mask = S.model, S.mean_acts, S.val, S.zs_train, S.test, S.icl_right
print("test n", len(zt), "10-shot", float(mask.float().mean()), "ICL-right", int(mask.sum()), flush=True)


def test_scores(iv):
    r = ivkit.score_prompts(model, zt, vector=iv).ranks == 0
    return float(r.float().mean()), float(r[mask].float().mean())


saved = ivkit.InstructionVector.load(f"runs/results_auto/{task_name}", model)
print("saved best-recipe IV", saved.injection, saved.layer, saved.scale, "k", saved.k,
      "test all / ICL-right", test_scores(saved), flush=True)

for s in scales_rank:
    t0 = time.time()
    eff = ivkit.indirect_effects(model, zs_train, s * mean_acts, progress=False)
    top = eff.top_heads(10)
    print(f"\nzero-shot ranking, patch to {s} x mean ({time.time() - t0:.1f} s); top 10:",
          " ".join(f"{l}.{h}:{a:.3f}" for l, h, a in top), flush=True)
    cands, sweeps = [], []
    for k in ks:
        iv = ivkit.InstructionVector.build(model, mean_acts, eff, k=k, task=task_name)
        sw = ivkit.layer_sweep(model, iv, val, scales=(1.0, 2.0, 3.0, 4.0), progress=False,
                               injections=("residual", "heads"))
        cands.append(iv)
        sweeps.append(sw)
        print(f"  k {k}: valid best {sw.best_injection} layer {sw.best_layer} scale {sw.best_scale} "
              f"top1 {sw.best_top1:.3f} prob {sw.best_prob:.4f}", flush=True)
    b = max(range(len(ks)), key=lambda i: (sweeps[i].best_top1, sweeps[i].best_prob, -ks[i]))
    iv, sw = cands[b], sweeps[b]
    iv = iv.replace(injection=sw.best_injection, layer=sw.best_layer, scale=sw.best_scale)
    print(f"  chosen k {ks[b]} {iv.injection} layer {iv.layer} scale {iv.scale}: test all / ICL-right",
          test_scores(iv), f"({time.time() - t0:.0f} s)", flush=True)
