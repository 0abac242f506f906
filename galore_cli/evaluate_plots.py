"""PNG figures of ``galore evaluate`` reports (matplotlib, imported here only)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


SHORT = {"gradient_x_activation": "gxa", "integrated_gradients": "ig", "gradient_hessian": "grad_hess",
         "probability": "prob"}


def short(setting: str) -> str:
    """A setting's name for tick labels: 'gxa\nlogit\nclip\nsoftmax'."""
    return "\n".join(SHORT.get(part, part) for part in setting.split("/"))


def plot(metric: str, data: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = {"deletion": _deletion, "types": _types, "sanity": _sanity, "pointing": _pointing}[metric](plt, data)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _deletion(plt, data: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    methods = list(dict.fromkeys(c["method"] for c in data["curves"]))
    for ax, key in zip(axes, ("deletion", "insertion")):
        for m in methods:
            cs = [c for c in data["curves"] if c["method"] == m]
            curve = np.mean([c[key] for c in cs], axis=0)
            area = np.mean([c[f"{key}_auc"] for c in cs])
            ax.plot(cs[0]["fractions"], curve, label=f"{m} (AUC {area:.3f})")
        ax.set_xlabel(f"fraction of pixels {'removed' if key == 'deletion' else 'inserted'}")
        ax.set_ylabel("probability of the explained class")
        ax.set_title(f"{key} ({data['baseline']} baseline), mean over photos")
        ax.legend(fontsize=7)
    return fig


def _types(plt, data: dict):
    rows = data["summary"]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        rs = [r for r in rows if r["kind"] == kind]
        series = ["effect"] + [k for k in rs[0] if k in ("random regions", "attributive region", "FinerCAM",
                                                         "own attributive, best")]
        width = 0.8 / len(series)
        for j, name in enumerate(series):
            ax.bar(np.arange(len(rs)) + j * width, [r.get(name, np.nan) for r in rs], width,
                   label="explanation" if name == "effect" else name)
        ax.set_xticks(np.arange(len(rs)) + 0.4 - width / 2)
        ax.set_xticklabels([short(r["setting"]) for r in rs], fontsize=7)
        title = {"attributive": "attributive: drop of h_y*", "counterfactual": "counterfactual: margin drop"}
        if kind.startswith("deliberative insertion"):
            title[kind] = f"insecurity, {kind.split()[-1]}: sum h_c with only the region kept"
        elif kind.startswith("deliberative"):
            title[kind] = f"insecurity, {kind.split()[-1]}: drop of min_c h_c (eq. 5)"
        ax.set_title(title.get(kind, kind), fontsize=9)
        ax.legend(fontsize=7)
    return fig


def _sanity(plt, data: dict):
    rows = data["summary"]
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(2, len(kinds), figsize=(5 * len(kinds), 7.5), squeeze=False)
    for col, kind in enumerate(kinds):
        for row, key in enumerate(("spearman", "ssim")):
            ax = axes[row][col]
            for setting in dict.fromkeys(r["setting"] for r in rows):
                rs = [r for r in rows if r["setting"] == setting and r["kind"] == kind]
                ax.plot([r["step"] for r in rs], [r[key] for r in rs], marker=".",
                        label=short(setting).replace("\n", "/"))
            steps = [r for r in rows if r["setting"] == rows[0]["setting"] and r["kind"] == kind]
            ax.set_xticks([r["step"] for r in steps])
            ax.set_xticklabels([r["randomised_through"].split(":")[-1] or "original" for r in steps],
                               rotation=90, fontsize=6)
            ax.set_ylim(-0.3, 1.05)
            ax.set_title(f"{kind}: {key} with the original map", fontsize=9)
            if row == 0 and col == 0:
                ax.legend(fontsize=6)
    fig.suptitle("cascading randomisation, top down (mean over photos)")
    return fig


def _pointing(plt, data: dict):
    rows = data["summary"]
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["hit_rate"] for r in rows], 0.4, label="hit rate")
    ax.bar(x + 0.2, [r["energy_share"] for r in rows], 0.4, label="energy share")
    ax.axhline(0.25, color="gray", linestyle="--", label="chance")
    ax.set_xticks(x)
    ax.set_xticklabels([short(r["method"]) for r in rows], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("grid pointing game (2 x 2 mosaics)")
    ax.legend(fontsize=7)
    return fig
