"""Notebook display: self-contained HTML (no script, nothing fetched) with the numbers it claims."""

import numpy as np

from ivkit.core.html import heat, sparkline, table


def test_table_heat_and_sparkline_are_plain_html():
    t = table([{"a": 1.23456, "b": "x<y"}], caption="c", digits=2)
    assert "<td>1.23</td>" in t and "x&lt;y" in t and "<caption" in t
    h = heat(np.array([[1.0, -1.0], [0.0, 0.5]]), marked=[(1, 1)])
    assert h.count("<td title='layer") == 4 and "rgb(255,0,0)" in h and "rgb(0,0,255)" in h
    assert h.count("outline:2px solid black") == 1 and "<script" not in h
    s = sparkline([3.0, 2.0, 1.0])
    assert "<polyline" in s and "3 &rarr; 1" in s


def test_results_display_their_numbers(tiny_llama, task_file):
    import ivkit

    res = ivkit.extract(tiny_llama, str(task_file), shots=3, mean_prompts=4, trials=2, top_k=3, filter_correct=False,
                        progress=False, sweep_prompts=6, scales=(1.0,))
    g = tiny_llama.geometry
    page = res._repr_html_()
    assert page.count("<td title='layer") == g.n_layers * g.n_heads and page.count("outline:2px solid black") == 3
    assert f"{res.iv.head_aie[0]:.5f}" in page and "<script" not in page
    assert res.effects._repr_html_().count("<td title='layer") == g.n_layers * g.n_heads
    ev = ivkit.evaluate_iv(tiny_llama, str(task_file), res.iv, n_prompts=6, shots=3, progress=False)
    assert ev._repr_html_().count("<tr>") == 1 + len(ev.results)
