"""Load-test results: latency percentiles, throughput, errors by code, and the paper's Table III beside them.

Example:
    >>> s = summarize([0.1, 0.2, 0.3, 0.4], ok_images=8, elapsed_s=2.0, requests=4, errors={})
    >>> s.images_per_second, s.p50_s, s.p99_s
    (4.0, 0.2, 0.4)
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

# Table III of Wang & Vasconcelos (TPAMI 2023): images per second on one NVIDIA Titan Xp, mean (stddev).
# (kind, architecture) -> ((method, IPS as printed in the paper), ...); GALORE first.
TABLE_III_IPS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("counterfactual", "VGG16"): (("GALORE", "26.51 (0.71)"), ("Goyal et al. [30]", "0.02 (0.00)")),
    ("counterfactual", "ResNet-50"): (("GALORE", "78.54 (11.87)"), ("Goyal et al. [30]", "1.13 (0.07)")),
    ("deliberative", "VGG16"): (("GALORE", "3.78 (0.31)"), ("Baseline", "<0.01")),
    ("deliberative", "ResNet-50"): (("GALORE", "8.41 (0.45)"), ("Baseline", "0.12 (0.06)")),
}
TABLE_III_ARCHS = ("VGG16", "ResNet-50")
TABLE_III_KINDS = ("counterfactual", "deliberative")

_ARCH_ALIASES = {"vgg16": "VGG16", "resnet50": "ResNet-50", "resnet-50": "ResNet-50"}


def table_iii_arch(architecture: str) -> str | None:
    """Table III's name for a model architecture ("resnet50" -> "ResNet-50"), or None when the paper has no row."""
    key = architecture.strip().lower().replace("_", "")
    for alias, name in _ARCH_ALIASES.items():
        if key == alias or key.startswith(alias):
            return name
    return None


@dataclass(frozen=True)
class LoadSummary:
    """What one load test measured. Times in seconds; throughput counts successfully explained images."""

    requests: int  # requests completed (any outcome)
    ok_images: int  # images answered with status OK
    elapsed_s: float  # first send to last answer
    images_per_second: float
    p50_s: float  # request latency percentiles (nearest rank), 0 when no request completed
    p95_s: float
    p99_s: float
    mean_s: float
    errors: dict[str, int] = field(default_factory=dict)  # code name -> count (requests or images)

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile ``q`` in [0, 100] of an ascending list; 0.0 for an empty list."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latencies_s: list[float], ok_images: int, elapsed_s: float, requests: int,
              errors: dict[str, int] | Counter) -> LoadSummary:
    """Reduces raw per-request latencies (seconds) and counts to a LoadSummary."""
    values = sorted(latencies_s)
    return LoadSummary(
        requests=requests,
        ok_images=ok_images,
        elapsed_s=elapsed_s,
        images_per_second=ok_images / elapsed_s if elapsed_s > 0 else 0.0,
        p50_s=percentile(values, 50),
        p95_s=percentile(values, 95),
        p99_s=percentile(values, 99),
        mean_s=sum(values) / len(values) if values else 0.0,
        errors=dict(sorted(errors.items())),
    )


def table_iii_rows(kinds: list[str], arch: str | None) -> list[tuple[str, str, str, str]]:
    """Paper rows (method, arch, kind, IPS) for the Table III kinds among ``kinds``.

    With an arch Table III knows, only that arch's rows; otherwise both archs' rows, for reference.
    """
    archs = (arch,) if arch in TABLE_III_ARCHS else TABLE_III_ARCHS
    rows = []
    for kind in TABLE_III_KINDS:
        if kind not in kinds:
            continue
        for a in archs:
            rows.extend((method, a, kind, ips) for method, ips in TABLE_III_IPS[(kind, a)])
    return rows


def format_report(summary: LoadSummary, kinds: list[str], architecture: str, label: str) -> str:
    """Human-readable report: throughput, latency, errors, and Table III rows beside this run's IPS."""
    lines = [
        f"requests      {summary.requests} in {summary.elapsed_s:.2f} s",
        f"images OK     {summary.ok_images}  ->  {summary.images_per_second:.2f} images/s",
        f"latency       p50 {summary.p50_s * 1e3:.1f} ms   p95 {summary.p95_s * 1e3:.1f} ms   "
        f"p99 {summary.p99_s * 1e3:.1f} ms   mean {summary.mean_s * 1e3:.1f} ms",
        "errors        " + (", ".join(f"{code}: {n}" for code, n in summary.errors.items()) or "none"),
    ]
    arch = table_iii_arch(architecture)
    paper = table_iii_rows(kinds, arch)
    lines.append("")
    if not paper:
        lines.append(f"Table III has IPS only for {' and '.join(TABLE_III_KINDS)} explanations; "
                     f"this run asked for {', '.join(kinds) or 'prediction only'}.")
        return "\n".join(lines)
    if arch is None:
        lines.append(f"Table III has no row for architecture {architecture!r}; its rows are shown for reference.")
    kind_text = "+".join(kinds)
    header = ("source", "method", "arch", "kind", "images/s")
    table = [header]
    table += [("paper (Titan Xp)", method, a, kind, ips) for method, a, kind, ips in paper]
    table.append(("this run", label, arch or architecture, kind_text, f"{summary.images_per_second:.2f}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines.append("Table III (IPS: images per second)")
    for row in table:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return "\n".join(lines)
