"""The search baselines of Table III (galore.evaluate.search_baselines) by hand on a 1 x 2 feature grid, and scored
end to end on the CUB-format fixture.

The hand head: one channel, logits (s, 0) with s the sum of F's cells, so p_0 = sigmoid(s), p_1 = sigmoid(-s).
Query F = [0, 1] (s = 1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galore.evaluate import proxy
from galore.evaluate.search_baselines import (goyal_counterfactual, score_search_baselines,
                                              sliding_window_deliberative, swap_probabilities)


def head(x: torch.Tensor) -> torch.Tensor:
    s = x.sum((1, 2, 3))
    return torch.stack([s, torch.zeros_like(s)], 1)


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


F = torch.tensor([[[0.0, 1.0]]])  # (K=1, h=1, w=2)


def test_swap_probabilities_replace_one_cell():
    """Cell i of F <- cell j of E = [2, 5]: s = E_j + (the other cell of F): i=0: 3, 6; i=1: 2, 5."""
    p = swap_probabilities(head, F, torch.tensor([[[2.0, 5.0]]]), [0])
    assert p.shape == (2, 2, 1)
    assert p[..., 0].flatten().tolist() == pytest.approx([sig(3), sig(6), sig(2), sig(5)], abs=1e-6)


def test_goyal_best_single_edit_by_hand():
    """Counter class 1 wants s small. Edits: (0, 0) s = 3, (0, 1) 6, (1, 0) 2, (1, 1) 5: the best is query cell 1
    <- exemplar cell 0 (s = 2). The query map ranks cell i by its best edit: [p_1(3), p_1(2)]; the exemplar map
    cell j by its best: [p_1(2), p_1(5)]."""
    q, e = goyal_counterfactual(head, F, torch.tensor([[[2.0, 5.0]]]), counter=1)
    assert q.shape == (1, 2) and e.shape == (1, 2)
    assert q.flatten().tolist() == pytest.approx([sig(-3), sig(-2)], abs=1e-6)
    assert e.flatten().tolist() == pytest.approx([sig(-2), sig(-5)], abs=1e-6)
    assert int(q.argmax()) == 1 and int(e.argmax()) == 0


def test_sliding_window_deliberative_by_hand():
    """a = 0 with E_a = [1, 3], b = 1 with E_b = [0, 4]; h_a(x) = sig(1), h_b(x) = sig(-1).
    Window 0 (F_0 = 0): E_a gives s = 2, 4: min |sig(s) - sig(1)| = sig(2) - sig(1); E_b gives s = 1, 5: 0.
    Window 1 (F_1 = 1): E_a gives s = 1, 3: 0; E_b gives s = 0, 4: min = sig(1) - sig(0).
    Costs 0.1497 and 0.2311: window 0 changes the prediction least; the map is exp(-cost)."""
    m = sliding_window_deliberative(head, F, torch.tensor([[[1.0, 3.0]]]), torch.tensor([[[0.0, 4.0]]]), 0, 1)
    cost = [sig(2) - sig(1), sig(1) - sig(0)]
    assert m.flatten().tolist() == pytest.approx([math.exp(-c) for c in cost], abs=1e-6)
    assert int(m.argmax()) == 0


def test_scored_on_the_protocols_segments(cub_root, cub_engine):
    """The fixture's engine (F = its 8 x 8 grid, the working grid): every baseline scores the same segments as
    GALORE's rows, at the protocol's counts; the GALORE rows are the report's own figures."""
    from galore.evaluate.cub import read_cub
    from galore.options import ExplainOptions

    cub = read_cub(cub_root)
    settings = proxy.ProxySettings(options=ExplainOptions(dims=(2,), top_e=3), coverages=(0.1, 0.125, 0.5),
                                   limit=2)
    report = proxy.run_protocol(cub_engine, cub, settings)
    gt = proxy.GroundTruth.of(cub, settings.fraction, settings.smoothing)
    view = proxy.View(cub, cub_engine.preprocess, settings.geometry)
    scores = score_search_baselines(cub_engine, view, report, gt, limit=2, coverages=(0.125,))
    out = scores.summary()
    assert set(out) >= {"galore/counterfactual/1", "goyal/counterfactual/1", "finer_cam/counterfactual/1",
                        "galore/deliberative/2", "sliding_window/deliberative/2"}
    for key in ("goyal/counterfactual/1", "finer_cam/counterfactual/1"):
        assert out[key]["segments"] == out["galore/counterfactual/1"]["segments"] == 2
        assert out[key]["images"] == 2 and out[key]["images_per_second"] > 0
    assert out["sliding_window/deliberative/2"]["segments"] == out["galore/deliberative/2"]["segments"] == 2
    query = [s for s in report.segments if s.kind == "counterfactual" and s.side == "query"][:2]
    assert out["galore/counterfactual/1"]["precision"] == pytest.approx(
        [np.nanmean([s.precision[0] for s in query])], nan_ok=True)
    for key, row in out.items():
        for v in (row["precision"] or []) + (row["recall"] or []):
            assert v is None or 0.0 <= v <= 1.0, key


def test_finer_cam_values_for_every_counterfactual_segment(cub_root):
    """One working-grid map per query-side counterfactual segment (binary and multi-class): FinerCAM of y* against
    that segment's own counter classes, as a direct ``finer_cam_map`` call gives it. A 4-channel F (the fixture's
    one channel makes every Grad-CAM a multiple of F, the same for any classes)."""
    from torch import nn

    from galore import Engine
    from galore.evaluate.cub import read_cub
    from galore.evaluate.search_baselines import _grid_values, finer_cam_values
    from galore.evaluate.type_deletion import Scorer, finer_cam_map
    from galore.options import ExplainOptions

    from .conftest import PREP

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    engine = Engine.from_module("cam", model, ["A", "B", "C"], PREP, layer="1", device="cpu")
    cub = read_cub(cub_root)
    settings = proxy.ProxySettings(options=ExplainOptions(dims=(2,), top_e=3), coverages=(0.1, 0.5), limit=2)
    report = proxy.run_protocol(engine, cub, settings)
    view = proxy.View(cub, engine.preprocess, settings.geometry)
    values, seconds = finer_cam_values(engine, view, report)
    wanted = {(s.image_id, s.kind, s.classes) for s in report.segments if s.kind == "counterfactual" and s.side == "query"}
    assert set(values) == wanted and {len(c) for _, _, c in wanted} == {2, 3} and seconds > 0
    scorer = Scorer.of(engine)
    for (image, _, classes), v in values.items():
        direct = finer_cam_map(scorer, scorer.input(view.image(image)), classes[0], classes[1:])
        assert v.shape == (engine.grid.cells,) and (v > 0).all()
        assert v == pytest.approx(_grid_values(engine, direct) + 1e-12, abs=1e-9)
    differ = [not np.allclose(values[i, k, c], values[i, k, c[:2]]) for i, k, c in wanted if len(c) == 3]
    assert any(differ)  # the multi-class target is not the binary one


def test_search_rows_render_table_iii():
    from galore_cli.synthetic import search_rows

    row = {"precision": [0.5, 0.25], "recall": [0.125, None], "piou": None, "segments": 2, "seconds": 4.0,
           "images": 2, "images_per_second": 0.5}
    lines = search_rows({"goyal/counterfactual/1": row})
    assert lines[-1] == ("| counterfactual/1 | Goyal et al. 2019 (exhaustive feature matching) | 2 | 0.500 | 0.125 | "
                         "- | 0.250 | - | 0.5 |")
