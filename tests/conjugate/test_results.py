"""Results: Wilson intervals per rate, the recovery and its bootstrap, 'undefined' when nothing dropped."""

import math

import numpy as np
import pytest

from ivkit.conjugate.probe import ProbeRecord, ProbeRun
from ivkit.conjugate.results import ConjugateResult, bootstrap_recovery, wilson
from ivkit.core.errors import InputError
from ivkit.core.stats import wilson_interval


def _run(model, transform, bits, task="repeat"):
    recs = tuple(ProbeRecord(task, i, "arithmetic", "a", "a" if b else "x", "a" if b else "x",
                             "in_context" if b else "neither").rescored() for i, b in enumerate(bits))
    return ProbeRun(model, transform, recs)


def _result(base, tuned, conj):
    return ConjugateResult("b", "t", (_run("b", "none", base), _run("b", "leet", base), _run("t", "none", tuned),
                                      _run("t", "leet", conj)))


def test_constant_outcomes_give_exact_recovery():
    r = bootstrap_recovery([1] * 50, [0] * 50, [1] * 25 + [0] * 25, treatment="leet", task="all")
    assert r.defined and r.drop == (1.0, 1.0, 1.0)
    assert r.value[0] == pytest.approx(0.5) and r.value[1] < 0.5 < r.value[2]
    full = bootstrap_recovery([1] * 50, [0] * 50, [1] * 50, treatment="leet", task="all")
    assert full.value == (1.0, 1.0, 1.0)


def test_recovery_is_undefined_when_the_drop_interval_includes_zero():
    rng = np.random.default_rng(0)
    same = rng.integers(0, 2, 100)
    r = bootstrap_recovery(same, rng.permutation(same), rng.integers(0, 2, 100), treatment="fr", task="repeat")
    assert r.drop[1] <= 0 <= r.drop[2] and not r.defined
    assert all(math.isnan(v) for v in r.value) and "undefined" in str(r)


def test_bootstrap_is_seeded_and_matches_a_direct_loop():
    rng = np.random.default_rng(1)
    b, t, c = rng.random(80) < 0.7, rng.random(80) < 0.2, rng.random(80) < 0.5
    r1 = bootstrap_recovery(b, t, c, treatment="x", task="y", n_boot=500, seed=3)
    assert r1 == bootstrap_recovery(b, t, c, treatment="x", task="y", n_boot=500, seed=3)
    assert r1 != bootstrap_recovery(b, t, c, treatment="x", task="y", n_boot=500, seed=4)
    # the slow path: resample with the same generator, one replicate at a time
    import zlib

    g = np.random.default_rng([3, zlib.crc32(b"x/y")])
    idx = g.integers(0, 80, size=(500, 80))
    drops = sorted(float(b[i].mean() - t[i].mean()) for i in idx)
    assert r1.drop[1] == drops[int(np.ceil(0.025 * 500)) - 1] and r1.drop[2] == drops[int(np.ceil(0.975 * 500)) - 1]
    assert r1.value[0] == pytest.approx((c.mean() - t.mean()) / (b.mean() - t.mean()))
    with pytest.raises(InputError):
        bootstrap_recovery([1], [1, 0], [0], treatment="x", task="y")


def test_result_table_plot_and_repr():
    res = _result([1] * 30 + [0] * 10, [0] * 35 + [1] * 5, [1] * 20 + [0] * 20)
    df = res.to_pandas()
    row = df[(df["model"] == "t") & (df["transform"] == "leet") & (df["task"] == "all")].iloc[0]
    assert (row.n, row.in_context_count, row.in_context) == (40, 20, 0.5)
    assert (row.in_context_lo, row.in_context_hi) == pytest.approx(wilson_interval(20, 40))
    assert row.neither_count == 20 and row.instruction_count == 0
    rec = res.recovery("leet")
    assert rec.value[0] == pytest.approx((0.5 - 5 / 40) / (30 / 40 - 5 / 40))
    assert len(res.recoveries()) == 2  # leet on repeat, leet on all
    fig = res.plot()
    assert len(fig.data) == 4 and fig.data[0].error_y.array is not None
    text = repr(res)
    assert "b: none 0.75" in text and "leet on all" in text
    page = res._repr_html_()
    assert page.count("<tr>") == 1 + 4 and "0.50" in page and "0.75" in page  # header + (2 models x 2 transforms)
    assert ConjugateResult.from_dict(res.to_dict()) == res
    assert wilson(0, 0)[0] != wilson(0, 0)[0]  # NaN for no prompts


def test_result_checks_its_runs():
    with pytest.raises(InputError, match="different labels"):
        ConjugateResult("m", "m", ())
    with pytest.raises(InputError, match="neither the base"):
        ConjugateResult("b", "t", (_run("z", "none", [1]),))
    with pytest.raises(InputError, match="'none'"):
        ConjugateResult("b", "t", (_run("b", "leet", [1]),))
