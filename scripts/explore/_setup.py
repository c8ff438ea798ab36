"""Set-up shared by the exploration scripts that rebuild an extraction's prompts: the model, the
task's split, the clean 10-shot mean head activations ``(n_layers, n_heads, d_head)`` exactly as
`ivkit extract` computes them, the validation prompts its sweep uses, 100 zero-shot training
prompts (the ``zero_shot`` ranking's), and the whole test split with its ICL-right mask."""
import time
from types import SimpleNamespace

import ivkit
from ivkit import load_task
from ivkit.core.prompts import encode_prompts, sample_prompts
from ivkit.evaluation import evaluation_prompts
from ivkit.pipeline import prepare_prompts


def setup(task_name: str) -> SimpleNamespace:
    model = ivkit.load_model("smollm2-135m-instruct")
    task = load_task(task_name)
    split = task.split(0)
    t0 = time.time()
    pp = prepare_prompts(model, task, progress=False)
    mean_acts = pp.mean_heads.mean(0) if pp.mean_heads is not None else ivkit.mean_head_activations(model, pp.mean)
    print(task_name, "prepare", round(time.time() - t0, 1), "s", flush=True)
    val = encode_prompts(model, sample_prompts(split.valid, style="zero_shot", n=100, seed=0, stream=3))
    zs_train = encode_prompts(model, sample_prompts(split.train, style="zero_shot", n=100, seed=0, stream=11))
    ev = evaluation_prompts(model, task, n_prompts=1000, seed=0)
    icl = ivkit.score_prompts(model, ev["few_shot"])
    return SimpleNamespace(model=model, task=task, split=split, mean_acts=mean_acts, val=val, zs_train=zs_train,
                           test=ev["zero_shot"], icl_right=icl.ranks == 0)
