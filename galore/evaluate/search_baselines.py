"""The search baselines of Table III (GALORE TPAMI 2023 §VI-F), at one receptive-field unit (one cell of F), and
FinerCAM, scored on the proxy protocol's own segments (``proxy.ProxyReport``) against the same ground truth.

  * ``goyal_counterfactual``: Goyal et al., "Counterfactual visual explanations" (ICML 2019, [30] of the paper),
    the exhaustive best single edit: for every cell i of the query's F and every cell j of the exemplar's F (an
    image of the counter class y^c), F with cell i replaced by the exemplar's cell j goes through the head; the
    edit (i, j) that makes y^c most probable is the explanation (query region i, exemplar region j). The maps
    returned rank every query cell by the best h_c it reaches over j (and every exemplar cell over i), so their
    top cell is Goyal's edit.
  * ``sliding_window_deliberative``: the paper's deliberative baseline (§VI-F): for an ambiguity (a, b), one
    training image of a and one of b; for every window W of the query (one cell of F), the windows W_a, W_b of
    those images that change the prediction least when put in W, |h_a(x^a) - h_a(x)| + |h_b(x^b) - h_b(x)|;
    the windows whose best matches change it least hold features common to a and b ("most confusing"): the map
    is exp(-that cost), whose top cell is the baseline's region.
  * ``finer_cam_map``: pytorch-grad-cam's FinerCAM (Zhang et al., CVPR 2025) of y* against y^c at layer F
    (``type_deletion.finer_cam_map``), the query side only. It is a map, not a search: ``finer_cam_values`` gives
    it for every counterfactual segment of a report (binary and multi-class), which ``region_baselines`` scores
    beside the other baseline regions.

Every h is the softmax probability (eq. 21's score, as the paper's Table III uses), windows are cells of F, and
edits happen in F (as [30] does), the head evaluated on every edited F: h*w x h'*w' head passes per search
(38,416 for a 14 x 14 F), batched by whole query cells. The regions are then cut on the working grid from the upsampled
map exactly as the engine's (``proxy.sweep``), so a baseline differs from GALORE in its map only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .proxy import (GroundTruth, ProxyReport, Segment, View, _exemplar_id, coverage_counts, part_iou,
                    precision_recall, sweep, working_values)

SEARCH_BASELINES = ("goyal", "finer_cam", "sliding_window")


@torch.no_grad()
def swap_probabilities(head: Callable[[torch.Tensor], torch.Tensor], F: torch.Tensor, E: torch.Tensor,
                       classes: Sequence[int], batch: int = 512) -> torch.Tensor:
    """(n, m, len(classes)): softmax probabilities of ``classes`` when cell i of F (K, h, w) is replaced by cell j
    of E (K, h', w'), n = h*w query cells, m = h'*w' exemplar cells; head batches of about ``batch`` edited F
    (whole query cells each), channels-last."""
    K, h, w = F.shape
    n, m = h * w, E.shape[1] * E.shape[2]
    cells = E.reshape(K, m).T  # (m, K)
    flat = F.reshape(1, 1, K, n)
    cols = torch.as_tensor(list(classes), device=F.device)
    per = max(1, batch // m)  # query cells per head batch
    out = []
    for start in range(0, n, per):
        rows = torch.arange(start, min(n, start + per), device=F.device)  # (r,)
        x = flat.repeat(len(rows), m, 1, 1)  # (r, m, K, n)
        x[torch.arange(len(rows), device=F.device), :, :, rows] = cells  # x[r, :, :, rows[r]] = E's cells
        x = x.view(len(rows) * m, K, h, w).contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(head(x).float(), -1)[:, cols].view(len(rows), m, len(cols)))
    return torch.cat(out)  # (n, m, V)


@torch.no_grad()
def goyal_counterfactual(head, F: torch.Tensor, E: torch.Tensor, counter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Goyal et al. 2019's exhaustive single-cell edit (module doc): (query map (h, w), exemplar map (h', w')), the
    best h_counter each cell reaches; the top cells of both are the edit (i*, j*)."""
    p = swap_probabilities(head, F, E, [counter])[..., 0]  # (n, m)
    return p.amax(1).view(F.shape[1:]), p.amax(0).view(E.shape[1:])


@torch.no_grad()
def sliding_window_deliberative(head, F: torch.Tensor, Ea: torch.Tensor, Eb: torch.Tensor, a: int, b: int
                                ) -> torch.Tensor:
    """§VI-F's deliberative baseline (module doc): (h, w) map exp(-cost), cost of window i =
    min_j |h_a(F_i<-Ea_j) - h_a(F)| + min_k |h_b(F_i<-Eb_k) - h_b(F)|."""
    base = torch.softmax(head(F[None]).float(), -1)[0]
    pa = swap_probabilities(head, F, Ea, [a])[..., 0]  # (n, m)
    pb = swap_probabilities(head, F, Eb, [b])[..., 0]
    cost = (pa - base[a]).abs().amin(1) + (pb - base[b]).abs().amin(1)  # (n,)
    return torch.exp(-cost).view(F.shape[1:])


@dataclass
class SearchScores:
    """Per baseline and explanation ("counterfactual/1", "deliberative/2"): precision, recall (per segment, at each
    coverage), PIoU (counterfactual pairs), seconds of search; GALORE's own segments' figures on the same
    images, and the engine's seconds for that explanation alone."""

    coverages: tuple[float, ...]
    precision: dict[str, list[np.ndarray]] = field(default_factory=dict)
    recall: dict[str, list[np.ndarray]] = field(default_factory=dict)
    piou: dict[str, list[np.ndarray]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, p, r, piou=None) -> None:
        self.precision.setdefault(key, []).append(np.asarray(p, float))
        self.recall.setdefault(key, []).append(np.asarray(r, float))
        if piou is not None:
            self.piou.setdefault(key, []).append(np.asarray(piou, float))

    def summary(self) -> dict:
        """key -> {precision, recall, piou: per coverage nanmean (None where undefined), segments, seconds,
        images, images_per_second}."""
        def mean(rows):
            if not rows:
                return None
            a = np.array(rows)
            with np.errstate(invalid="ignore"):
                v = np.nanmean(np.where(np.isnan(a), np.nan, a), 0) if (~np.isnan(a)).any() else None
            return None if v is None else [None if np.isnan(x) else float(x) for x in v]

        out = {}
        for key in self.precision:
            images, seconds = self.images.get(key, 0), self.seconds.get(key, 0.0)
            out[key] = {"precision": mean(self.precision[key]), "recall": mean(self.recall[key]),
                        "piou": mean(self.piou.get(key, [])), "segments": len(self.precision[key]),
                        "seconds": round(seconds, 2), "images": images,
                        "images_per_second": images / seconds if seconds > 0 else None}
        return out


def _features(engine, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return engine.split.backbone(engine.preprocess(x)[0][None].to(engine.device)).float()[0]


def _grid_values(engine, heatmap: torch.Tensor) -> np.ndarray:
    """A feature-grid map (h, w) or a crop-pixel map (S, S) as (G*G,) working-grid values."""
    if heatmap.shape[-1] == engine.grid.side:
        return heatmap.flatten().double().cpu().numpy()
    return working_values(engine.grid, heatmap)


def finer_cam_values(engine, view: View, report: ProxyReport, progress: Callable[[int], None] | None = None
                     ) -> tuple[dict[tuple[int, str, tuple[int, ...]], np.ndarray], float]:
    """FinerCAM of y* against the segment's counter classes (``type_deletion.finer_cam_map``) as working-grid
    values (G*G,), for every query-side counterfactual segment of ``report``, keyed (image id, "counterfactual",
    classes), for
    ``region_baselines.baseline_curves(maps=...)``; and the seconds the maps took (one FinerCAM per segment)."""
    from .type_deletion import Scorer, finer_cam_map

    scorer = Scorer.of(engine)
    wanted: dict[int, set[tuple[int, ...]]] = {}
    for s in report.segments:
        if s.kind == "counterfactual" and s.side == "query" and s.cells is not None:
            wanted.setdefault(s.image_id, set()).add(tuple(s.classes))
    out, seconds = {}, 0.0
    for image_id, tuples in wanted.items():
        x = scorer.input(view.image(image_id))
        for classes in sorted(tuples):
            began = time.perf_counter()
            cam = finer_cam_map(scorer, x, classes[0], classes[1:])
            out[image_id, "counterfactual", classes] = _grid_values(engine, cam) + 1e-12  # FinerCAM is >= 0: zeros stay selectable
            seconds += time.perf_counter() - began
        if progress:
            progress(1)
    return out, seconds


def score_search_baselines(engine, view: View, report: ProxyReport, gt: GroundTruth, limit: int,
                           coverages: Sequence[float] = (0.005,), baselines: Sequence[str] = SEARCH_BASELINES,
                           insecurities: int = 1, progress: Callable[[int], None] | None = None) -> SearchScores:
    """The search baselines on the first ``limit`` explained images of ``report`` (from ``run_protocol`` with
    ``engine``): Goyal and FinerCAM on every binary counterfactual (y*, y^c) with the protocol's exemplar of y^c,
    the sliding window on the ``insecurities`` strongest deliberative pairs (a, b) of each image, with the protocol's exemplar rule for one training image
    of a and one of b; each scored like the segment it stands beside, and that segment's own figures kept as
    "galore/<key>". Timing: each baseline's search per image; GALORE's, the engine alone for that kind."""
    from galore.engine import ImageRequest
    from galore.options import Kind

    from .region_baselines import segment_truth
    from .type_deletion import Scorer, finer_cam_map

    settings = report.settings
    levels = [int(np.argmin([abs(c - w) for c in settings.coverages])) for w in coverages]
    counts = coverage_counts(engine.grid.cells, coverages)
    ids = report.images[:limit]
    chosen = set(ids)
    scores = SearchScores(tuple(coverages))
    scorer = Scorer.of(engine)
    head = engine.split.head
    segs = [s for s in report.segments if s.image_id in chosen]
    pairs: dict[int, dict[str, Segment]] = {}
    for s in segs:
        if s.kind == "counterfactual" and s.dim == 1:
            pairs.setdefault(s.pair, {})[s.side] = s
    for key, kind, dims in (("counterfactual/1", Kind.COUNTERFACTUAL, ()), ("deliberative/2", Kind.DELIBERATIVE,
                                                                               (2,))):
        began = time.perf_counter()
        opts = replace(settings.options, kinds=frozenset({kind}), dims=dims or settings.options.dims)
        requests = []
        for i in ids:
            exemplars = {}
            if kind is Kind.COUNTERFACTUAL:
                q = next((p["query"] for p in pairs.values() if p.get("query") and p["query"].image_id == i), None)
                if q is None:
                    continue
                c = q.classes[1]
                exemplars = {c: view.image(_exemplar_id(view.cub, c, settings.seed, i))}
                opts_i = replace(opts, counter_classes=(c,))
            else:
                opts_i = opts
            requests.append(ImageRequest(view.image(i), opts_i, exemplars))
        engine.explain(requests)
        scores.seconds[f"galore/{key}"] = time.perf_counter() - began
        scores.images[f"galore/{key}"] = len(requests)
    for n, i in enumerate(ids):
        x = view.image(i)
        F = None
        for p in pairs.values():
            q, e = p.get("query"), p.get("exemplar")
            if q is None or q.image_id != i:
                continue
            y, c = q.classes[0], q.classes[1]
            scores.add("galore/counterfactual/1", q.precision[levels], q.recall[levels],
                       None if e is None else part_iou(q.inside[levels], e.inside[levels], q.seen, e.seen))
            truth = segment_truth(gt, q)
            if "goyal" in baselines:
                began = time.perf_counter()
                F = _features(engine, x) if F is None else F
                ex = _exemplar_id(view.cub, c, settings.seed, i)
                qmap, emap = goyal_counterfactual(head, F, _features(engine, view.image(ex)), c)
                scores.seconds["goyal"] = scores.seconds.get("goyal", 0.0) + time.perf_counter() - began
                scores.images["goyal"] = scores.images.get("goyal", 0) + 1
                qs = sweep(_grid_values(engine, qmap), q.cells, counts)
                pr = precision_recall(qs.inside, truth, qs.seen)
                piou = None
                if e is not None:
                    es = sweep(_grid_values(engine, emap), e.cells, counts)
                    piou = part_iou(qs.inside, es.inside, qs.seen, es.seen)
                scores.add("goyal/counterfactual/1", *pr, piou)
            if "finer_cam" in baselines:
                began = time.perf_counter()
                cam = finer_cam_map(scorer, scorer.input(x), y, [c])
                scores.seconds["finer_cam"] = scores.seconds.get("finer_cam", 0.0) + time.perf_counter() - began
                scores.images["finer_cam"] = scores.images.get("finer_cam", 0) + 1
                fs = sweep(_grid_values(engine, cam) + 1e-12, q.cells, counts)
                scores.add("finer_cam/counterfactual/1", *precision_recall(fs.inside, truth, fs.seen))
        pairs_of_image = [s for s in segs if s.image_id == i and s.kind == "deliberative" and s.dim == 2
                          ][:insecurities]  # the strongest first, as the engine lists them
        if pairs_of_image and "sliding_window" in baselines:
            began = time.perf_counter()
            F = _features(engine, x) if F is None else F
            for s in pairs_of_image:
                a, b = s.classes
                scores.add("galore/deliberative/2", s.precision[levels], s.recall[levels])
                Ea = _features(engine, view.image(_exemplar_id(view.cub, a, settings.seed, i)))
                Eb = _features(engine, view.image(_exemplar_id(view.cub, b, settings.seed, i)))
                m = sliding_window_deliberative(head, F, Ea, Eb, a, b)
                sw = sweep(_grid_values(engine, m), s.cells, counts)
                scores.add("sliding_window/deliberative/2", *precision_recall(sw.inside, segment_truth(gt, s), sw.seen))
            scores.seconds["sliding_window"] = scores.seconds.get("sliding_window", 0.0) + time.perf_counter() - began
            scores.images["sliding_window"] = scores.images.get("sliding_window", 0) + 1
        if progress:
            progress(1)
    for name in ("goyal", "finer_cam"):
        if name in scores.seconds:
            scores.seconds[f"{name}/counterfactual/1"] = scores.seconds.pop(name)
            scores.images[f"{name}/counterfactual/1"] = scores.images.pop(name)
    if "sliding_window" in scores.seconds:
        scores.seconds["sliding_window/deliberative/2"] = scores.seconds.pop("sliding_window")
        scores.images["sliding_window/deliberative/2"] = scores.images.pop("sliding_window")
    return scores
