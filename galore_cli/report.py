"""Paper-style figures, text summaries and a self-contained HTML report for explained images.

Works on ``galore_client.results.Explanation`` (from a server or the in-process engine) plus the original image
as an ``(H0, W0, 3)`` uint8 array. Figures (one row of captioned panels each):

* ``attributive``: the input, the attributive heatmap overlay with its region outlined, and the self-aware one;
* ``deliberative``: each insecurity as its region highlighted, captioned with its class tuple and strength;
* ``counterfactual``: the query region next to each counter-class exemplar region (or why one is missing).

Example (``pixels`` the photo, ``result`` its explanation; run in tests/client/test_report.py)::

    entry = ReportEntry(name="cat.jpg", image=pixels, explanation=result)
    files = write_report("out", [entry])
    files.html  # out/report.html, with every figure inlined as a data URI
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from galore.options import Kind, Shape
from galore_client.results import Explanation, Region

from . import render



@dataclass(frozen=True)
class ReportEntry:
    """One image of a report: its pixels (H0, W0, 3) uint8 (None when it could not be read) and explanation.
    ``exemplars`` maps counter class id -> exemplar image (H, W, 3) uint8."""

    name: str
    image: np.ndarray | None
    explanation: Explanation
    exemplars: Mapping[int, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class ReportFiles:
    """What ``write_report`` wrote: the HTML page and, per entry name, figure kind -> PNG path."""

    html: Path
    figures: dict[str, dict[str, Path]]


def attributive_figure(image: np.ndarray, result: Explanation) -> render.Figure | None:
    """Input | attributive overlay | self-aware overlay (those present); None when neither was computed."""
    sides = [(kind.value.replace("_", "-"), getattr(result, kind.value)) for kind in Kind
             if kind.shape is Shape.CLASS_REGION and getattr(result, kind.value) is not None]
    if not sides:
        return None
    picture, _ = render.fit(image)
    top = result.predicted
    caption = [f"prediction: {top.label} ({top.probability:.2f})" if top else "prediction: -",
               f"s(x) {result.score_name}: {result.score:.3f}"]
    panels = [render.Panel(picture, tuple(caption))]
    for name, side in sides:
        panels.append(render.Panel(_region_picture(image, side.region, result.crop_box, render.PALETTE[0]),
                                   (f"{name}: {side.cls} ({side.probability:.2f})",
                                    f"strength {side.region.strength:.3g}")))
    explained = sides[0][1].cls  # the prediction, or the class the request asked to explain
    return render.compose(panels, title=f"Attributive explanation of '{explained.label}'")


def deliberative_figure(image: np.ndarray, result: Explanation, limit: int = 6) -> render.Figure | None:
    """One panel per insecurity (strongest first, at most ``limit``): region highlighted, class tuple, strength."""
    insecurities = result.insecurities[:limit]
    if not insecurities:
        return None
    panels = []
    for rank, insecurity in enumerate(insecurities):
        color = render.PALETTE[rank % len(render.PALETTE)]
        picture, mask = render.fit(image, insecurity.region.mask)
        panels.append(render.Panel(render.highlight(picture, mask, color),
                                   (f"#{rank + 1} " + " / ".join(insecurity.labels),
                                    f"strength {insecurity.strength:.3g}")))
    top = result.predicted
    return render.compose(panels, title=f"Deliberative explanation: insecurities about '{top.label if top else '?'}'")


def counterfactual_figure(image: np.ndarray, result: Explanation,
                          exemplars: Mapping[int, np.ndarray] | None = None) -> render.Figure | None:
    """Query region | one exemplar region per counter class, side by side (eq. 13's concatenation)."""
    cf = result.counterfactual
    if cf is None:
        return None
    exemplars = exemplars or {}
    picture, mask = render.fit(image, cf.query.mask)
    panels = [render.Panel(render.highlight(picture, mask, render.PALETTE[0]),
                           (f"query: {cf.predicted}", f"strength {cf.query.strength:.3g}"))]
    for rank, side in enumerate(cf.exemplars, start=1):
        color = render.PALETTE[rank % len(render.PALETTE)]
        exemplar = exemplars.get(side.cls.class_id)
        if side.region is not None and exemplar is not None and exemplar.shape[:2] == side.region.mask.shape:
            ex_picture, ex_mask = render.fit(exemplar, side.region.mask)
            panels.append(render.Panel(render.highlight(ex_picture, ex_mask, color),
                                       (f"exemplar: {side.cls}", f"strength {side.region.strength:.3g}")))
        else:
            why = side.missing_reason or (f"exemplar '{side.exemplar_key}' is in the server's bank; its pixels "
                                          "are not available to the client" if side.region is not None
                                          else "no exemplar")
            panels.append(render.Panel(render.placeholder(picture.shape[1], picture.shape[0], why),
                                       (f"exemplar: {side.cls}", "not shown")))
    counters = ", ".join(str(c) for c in cf.counter)
    return render.compose(panels, title=f"Why '{cf.predicted}' and not '{counters}'?  strength {cf.strength:.3g}")


# One figure per shape (its file and HTML name, how it is drawn): every kind of the shape is in it.
FIGURES = {Shape.CLASS_REGION: ("attributive", lambda entry: attributive_figure(entry.image, entry.explanation)),
           Shape.INSECURITIES: ("deliberative", lambda entry: deliberative_figure(entry.image, entry.explanation)),
           Shape.COUNTERFACTUAL: ("counterfactual", lambda entry: counterfactual_figure(entry.image, entry.explanation,
                                                                                         entry.exemplars))}
FIGURE_KINDS = tuple(name for name, _ in FIGURES.values())


def figures(entry: ReportEntry) -> dict[str, render.Figure]:
    """Every figure that the entry's explanation supports, keyed by name (see FIGURES)."""
    if not entry.explanation.ok:
        return {}
    made = {name: draw(entry) for name, draw in FIGURES.values()}
    return {name: fig for name, fig in made.items() if fig is not None}


def summary_text(name: str, result: Explanation) -> str:
    """Readable multi-line summary: top classes, s(x), insecurities by strength, counterfactual strength."""
    if not result.ok:
        return f"{name}: FAILED {result.error}"
    lines = [f"{name} ({result.width}x{result.height})"]
    for i, top in enumerate(result.top_classes):
        lines.append(f"  {'predicted' if i == 0 else '         '} {top.probability:6.3f}  {top.label} [{top.class_id}]")
    lines.append(f"  s(x) {result.score_name}: {result.score:.3f}")
    for kind in Kind:
        value = getattr(result, kind.value)
        if value:
            lines += _TEXT[kind.shape](kind, value, result)
    return "\n".join(lines)


def summary_dict(name: str, result: Explanation) -> dict:
    """JSON-ready summary of one image (no masks; regions as pixel counts, boxes and strengths)."""
    if not result.ok:
        return {"image": name, "ok": False, "error": {"code": result.error.code, "field": result.error.field,
                                                      "message": result.error.message}}
    out = {
        "image": name, "ok": True, "width": result.width, "height": result.height,
        "top_classes": [{"class_id": t.class_id, "label": t.label, "probability": t.probability}
                        for t in result.top_classes],
        "score": {"name": result.score_name, "value": result.score},
    }
    for kind in Kind:
        value = getattr(result, kind.value)
        if value:
            out.update(_DICT[kind.shape](kind, value, result))
    return out


def _class_region_text(kind: Kind, side, result: Explanation) -> list[str]:
    return [f"  {kind.value.replace('_', '-')}: {side.cls} (p {side.probability:.3f}), strength "
            f"{side.region.strength:.3g}, {_percent(side.region, result)} of the image"]


def _insecurities_text(kind: Kind, groups, result: Explanation) -> list[str]:
    ranked = sorted((ins for group in groups.values() for ins in group), key=lambda ins: ins.strength, reverse=True)
    return ["  insecurities (strongest first):"] + [
        f"    {rank}. {' / '.join(ins.labels)}  strength {ins.strength:.3g}, {_percent(ins.region, result)} of the image"
        for rank, ins in enumerate(ranked, start=1)]


def _counterfactual_text(kind: Kind, cf, result: Explanation) -> list[str]:
    counters = ", ".join(str(c) for c in cf.counter)
    return [f"  counterfactual: why {cf.predicted} and not {counters}? strength {cf.strength:.3g}"
            + ("" if cf.complete else " (incomplete: " + "; ".join(
                f"{s.cls}: {s.missing_reason or 'no exemplar'}" for s in cf.exemplars if s.region is None) + ")")]


def _class_region_dict(kind: Kind, side, result: Explanation) -> dict:
    return {kind.value: {"class_id": side.cls.class_id, "label": side.cls.label, "probability": side.probability,
                         **_region_dict(side.region)}}


def _insecurities_dict(kind: Kind, groups, result: Explanation) -> dict:
    ranked = sorted((ins for group in groups.values() for ins in group), key=lambda ins: ins.strength, reverse=True)
    return {"insecurities": [{"class_ids": [c.class_id for c in ins.classes], "labels": list(ins.labels),
                              **_region_dict(ins.region)} for ins in ranked]}


def _counterfactual_dict(kind: Kind, cf, result: Explanation) -> dict:
    return {kind.value: {
        "predicted": {"class_id": cf.predicted.class_id, "label": cf.predicted.label},
        "counter": [{"class_id": c.class_id, "label": c.label} for c in cf.counter],
        "strength": cf.strength, "complete": cf.complete, "query": _region_dict(cf.query),
        "exemplars": [{"class_id": s.cls.class_id, "label": s.cls.label, "exemplar_key": s.exemplar_key,
                       "missing_reason": s.missing_reason,
                       "region": None if s.region is None else _region_dict(s.region)} for s in cf.exemplars]}}


# A kind's lines of the text summary and entries of the JSON summary, by its shape.
_TEXT = {Shape.CLASS_REGION: _class_region_text, Shape.INSECURITIES: _insecurities_text,
         Shape.COUNTERFACTUAL: _counterfactual_text}
_DICT = {Shape.CLASS_REGION: _class_region_dict, Shape.INSECURITIES: _insecurities_dict,
         Shape.COUNTERFACTUAL: _counterfactual_dict}


@dataclass(frozen=True)
class RenderedEntry:
    """One image of the HTML page: its name, text summary and figure kind -> PNG bytes."""

    name: str
    summary: str
    pngs: Mapping[str, bytes]


def render_entry(entry: ReportEntry) -> RenderedEntry:
    """Renders every figure of ``entry`` to PNG bytes (the pixels are not kept)."""
    return RenderedEntry(entry.name, summary_text(entry.name, entry.explanation),
                         {kind: fig.png_bytes() for kind, fig in figures(entry).items()})


def html_report(entries: Sequence[ReportEntry | RenderedEntry], title: str = "GALORE explanations") -> str:
    """A single HTML page with every figure inlined as a base64 PNG data URI; no external assets."""
    sections = []
    for item in entries:
        entry = render_entry(item) if isinstance(item, ReportEntry) else item
        body = [f"<h2>{html.escape(entry.name)}</h2>", f"<pre>{html.escape(entry.summary)}</pre>"]
        for kind in FIGURE_KINDS:
            if kind in entry.pngs:
                data = base64.b64encode(entry.pngs[kind]).decode("ascii")
                body.append(f'<figure><img alt="{kind} explanation of {html.escape(entry.name, quote=True)}" '
                            f'src="data:image/png;base64,{data}"><figcaption>{kind}</figcaption></figure>')
        sections.append('<section class="image">' + "\n".join(body) + "</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:24px;background:#fafafa;color:#222}"
        "section.image{background:#fff;border:1px solid #ddd;padding:12px 16px;margin-bottom:20px}"
        "figure{margin:8px 0}img{max-width:100%;height:auto}pre{background:#f3f3f3;padding:8px}"
        "figcaption{color:#666;font-size:12px}"
        f"</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections) + "\n</body></html>\n"
    )


class ReportWriter:
    """Writes ``<stem>_<kind>.png`` per figure as images arrive, and ``report.html`` on ``finish``.

    Keeps only PNG bytes and summaries in memory, so a long folder run does not hold every image's pixels.
    """

    def __init__(self, out_dir, title: str = "GALORE explanations"):
        self.out = Path(out_dir)  # created on the first write
        self.title = title
        self.rendered: list[RenderedEntry] = []
        self.figures: dict[str, dict[str, Path]] = {}
        self._stems: set[str] = set()

    def add(self, entry: ReportEntry) -> dict[str, Path]:
        """Renders and writes the entry's figures; returns figure kind -> PNG path."""
        rendered = render_entry(entry)
        self.out.mkdir(parents=True, exist_ok=True)
        stem = _unique_stem(entry.name, self._stems)
        paths = {}
        for kind, png in rendered.pngs.items():
            paths[kind] = self.out / f"{stem}_{kind}.png"
            paths[kind].write_bytes(png)
        self.rendered.append(rendered)
        self.figures[entry.name] = paths
        return paths

    def finish(self) -> ReportFiles:
        self.out.mkdir(parents=True, exist_ok=True)
        page = self.out / "report.html"
        page.write_text(html_report(self.rendered, self.title), encoding="utf-8")
        return ReportFiles(html=page, figures=self.figures)


def write_report(out_dir, entries: Sequence[ReportEntry], title: str = "GALORE explanations") -> ReportFiles:
    """Writes ``<stem>_<kind>.png`` per figure and ``report.html`` into ``out_dir`` (created if missing)."""
    writer = ReportWriter(out_dir, title)
    for entry in entries:
        writer.add(entry)
    return writer.finish()


def _region_picture(image: np.ndarray, region: Region, crop_box, color) -> np.ndarray:
    """Heatmap overlay with the mask outlined when the heatmap and where it lies (``crop_box``) are known, else
    the highlighted mask."""
    if region.heatmap is not None and crop_box is not None:
        picture, mask = render.fit(render.overlay(image, region.heatmap, crop_box), region.mask)
        return render.draw_outline(picture, mask, (255, 255, 255))
    picture, mask = render.fit(image, region.mask)
    return render.highlight(picture, mask, color)


def _region_dict(region: Region) -> dict:
    return {"strength": region.strength, "pixel_count": region.pixel_count,
            "bbox": None if region.bbox is None else list(region.bbox)}


def _percent(region: Region, result: Explanation) -> str:
    total = max(1, result.width * result.height)
    return f"{100.0 * region.pixel_count / total:.1f}%"


def _unique_stem(name: str, used: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem) or "image"
    stem, n = base, 2
    while stem in used:
        stem, n = f"{base}_{n}", n + 1
    used.add(stem)
    return stem
