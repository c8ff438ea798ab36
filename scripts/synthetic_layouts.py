#!/usr/bin/env python
"""Compare two ways of feeding a regression prompt to a GPT-2 (the choice behind
`ivkit.synthetic.model`'s layout), on the discrete prior alone.

    python scripts/synthetic_layouts.py --n-discrete 8 --steps 3000

* ``interleaved``: one position per input and one per label, ``x_0, y_0, x_1, ...`` (Garg et al.);
* ``pairs``: one position per prediction, ``[x_{i-1}, y_{i-1}, x_i]`` (ivkit's layout).

Both train the same GPT-2 blocks (4 layers, 4 heads, width 64) with the same batches, learning
rate and seed, on the discrete prior only, and print every 500 steps the seconds so far and the
mean squared error at a few example counts on validation prompts, next to ridge and the discrete
Bayes predictor. A network that has learned the discrete set beats ridge at 2-4 examples.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import GPT2Config, GPT2Model

from ivkit.synthetic import RegressionTask
from ivkit.synthetic.bayes import bayes_predictions
from ivkit.synthetic.data import discrete_set, sample_prompts, seeded_generator
from ivkit.synthetic.measure import eval_prompts

SHOWN = [1, 2, 3, 4, 6, 10, 20, 40]


class Net(torch.nn.Module):
    def __init__(self, layout: str, d: int, n: int, width: int = 64):
        super().__init__()
        torch.manual_seed(0)
        self.layout, self.d, self.n = layout, d, n
        cfg = GPT2Config(vocab_size=1, n_positions=2 * n - 1 if layout == "interleaved" else n, n_embd=width, n_layer=4,
                         n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
        self.read_in = torch.nn.Linear(d + 1 if layout == "interleaved" else 2 * d + 1, width)
        self.blocks = GPT2Model(cfg)
        self.read_out = torch.nn.Linear(width, 1)

    def forward(self, xs, ys):
        b, n, d = xs.shape
        if self.layout == "interleaved":
            t = xs.new_zeros(b, 2 * n - 1, d + 1)
            t[:, 0::2, :d], t[:, 1::2, d] = xs, ys[:, :-1]
            return self.read_out(self.blocks(inputs_embeds=self.read_in(t)).last_hidden_state[:, 0::2]).squeeze(-1)
        t = xs.new_zeros(b, n, 2 * d + 1)
        t[:, 1:, :d], t[:, 1:, d], t[:, :, d + 1:] = xs[:, :-1], ys[:, :-1], xs
        return self.read_out(self.blocks(inputs_embeds=self.read_in(t)).last_hidden_state).squeeze(-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="interleaved,pairs")
    ap.add_argument("--n-discrete", type=int, default=8)
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    task = RegressionTask(dim=4, noise=a.noise, n_discrete=a.n_discrete)
    table = discrete_set(task)
    val = eval_prompts(task, 500, "discrete", "validation")
    for name in ("ridge", "discrete"):
        e = ((bayes_predictions(val, task, name) - val.ys) ** 2).mean(0)
        print(f"{name:>12} Bayes: " + " ".join(f"{e[i]:.2f}" for i in SHOWN) + f" | 1-40: {e[1:].mean():.3f}")
    for layout in a.layouts.split(","):
        net = Net(layout, task.dim, task.n_points)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for step in range(1, a.steps + 1):
            b = sample_prompts(task, 32, "discrete", seeded_generator("layouts", step), discrete=table)
            for g in opt.param_groups:
                g["lr"] = 1e-3 * min(1.0, step / 50)
            loss = ((net(b.xs, b.ys) - b.ys) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if step % 500 == 0:
                with torch.no_grad():
                    e = ((net(val.xs, val.ys) - val.ys) ** 2).mean(0)
                print(f"{layout:>12} {step:5d} {time.perf_counter() - t0:5.0f} s: " + " ".join(f"{e[i]:.2f}" for i in SHOWN)
                      + f" | 1-40: {e[1:].mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
