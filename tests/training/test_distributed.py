"""The same fine-tuning under ``accelerate launch`` with two CPU processes (gloo): both processes see
the same loss, and it is the one-process run's (the global batch and the token-mean loss are the
same)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import json, sys
import ivkit
from ivkit.training import finetune
model_dir, task, out, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
res = finetune(ivkit.load_model(model_dir), task, out, steps=3, save_every=3, batch_size=batch, lr=1e-3, seed=2,
               progress=False)
import os
rank = int(os.environ.get("RANK", "0"))  # set by accelerate launch
json.dump(res.losses, open(f"{out}/losses_rank{rank}.json", "w"))
"""


def test_two_processes_see_the_same_loss_as_one(tmp_path, tiny_llama_dir, task_file):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one = tmp_path / "one"
    subprocess.run([sys.executable, script, tiny_llama_dir, task_file, one, "4"], check=True, env=env, timeout=300)
    two = tmp_path / "two"
    accelerate = Path(sys.executable).parent / "accelerate"
    # --multi_gpu is accelerate's multi-process (torchrun) launcher; on a CPU the Trainer joins the processes with gloo
    proc = subprocess.run([accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
                           script, tiny_llama_dir, task_file, two, "2"], env=env, timeout=600,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = json.loads((one / "losses_rank0.json").read_text())
    ranks = [json.loads((two / f"losses_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(single) == 3 and ranks[0] == ranks[1]
    assert [s for s, _ in ranks[0]] == [1, 2, 3]
    assert [l for _, l in ranks[0]] == pytest.approx([l for _, l in single], abs=1e-5)
