"""Command-line spellings of every ``ExplainOptions`` field, generated from the options themselves.

``galore explain`` and ``galore loadtest`` both call ``add_option_arguments``; choices come from the engine's enums
and every "(default ...)" from ``ExplainOptions()``, so a new enum value or a changed default reaches the CLI and the
load tester without an edit here. Unset flags stay None and mean the engine default.

``FLAGS`` maps each galore.v1 ``ExplainOptions`` field to the flags that set it (the first is canonical);
tests/client/test_contract.py walks the proto descriptor against it.
"""
from __future__ import annotations

import argparse
import enum
from dataclasses import fields

from galore.options import ExplainOptions, Kind, Threshold, choices
from galore_client.settings import ExplainSettings

FLAGS: dict[str, tuple[str, ...]] = {
    "kinds": ("--kinds",),
    "prediction_only": ("--prediction-only",),
    "attribution": ("--attribution",),
    "score": ("--score",),
    "target": ("--attribution-target",),  # "--target" is the load tester's HOST:PORT
    "clip_negative": ("--clip-negative", "--no-clip-negative"),
    "normalize": ("--normalize", "--no-normalize"),
    "top_e": ("--top-e",),
    "dims": ("--dims", "--dim"),
    "max_insecurities": ("--max-insecurities",),
    "counter_classes": ("--counter-classes", "--counter"),
    "threshold": ("--coverage", "--threshold"),
    "include_heatmaps": ("--include-heatmaps", "--no-include-heatmaps"),
    "top_k": ("--top-k",),
    "ig_steps": ("--ig-steps",),
    "mask_encoding": ("--mask-encoding",),
    "explained_class": ("--explain-class",),
    "exemplar_policy": ("--exemplar-policy",),
}
EXEMPLAR_FLAGS = ("--exemplars", "--exemplar")
DEST = {"target": "attribution_target"}  # argparse names that would clash with a command's own (loadtest --target)


def _default_text(value) -> str:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        return "all" if value == frozenset(Kind) else ",".join(sorted(m.value for m in value)) or "none"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def kind_list(text: str) -> list[str]:
    """'attributive,deliberative' | 'all' | 'prediction' -> kind names ('prediction': none, i.e. [''])."""
    names = [k.lower().replace("-", "_") for k in _comma_list(text)]
    if names == ["all"]:
        return list(choices(Kind))
    if names == ["prediction"]:
        return [""]
    unknown = [k for k in names if k not in choices(Kind)]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(choices(Kind))}, "
                                         "'all' or 'prediction')")
    return names


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in _comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers (comma list or repeated), got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def add_option_arguments(parser: argparse.ArgumentParser, heatmap_note: str = "") -> None:
    """Adds one flag (or pair) per ExplainOptions field, plus --prediction-only and --exemplars, to ``parser``."""
    defaults = ExplainOptions()
    group = parser.add_argument_group("explanation options (unset: the service default)")
    for f in fields(ExplainOptions):
        flags, help_text = FLAGS[f.name], f.metadata.get("help", "")
        symbol = f.metadata.get("symbol") or None
        value = getattr(defaults, f.name)
        default = f"(default {_default_text(value)})"
        if f.name == "kinds":
            group.add_argument(*flags, type=kind_list, action="extend", metavar="KIND[,KIND]", dest="kinds",
                               help=f"{help_text}, comma list or repeated: {', '.join(choices(Kind))}, 'all' or "
                                    "'prediction' " + default)
            group.add_argument(*FLAGS["prediction_only"], action="store_true", dest="prediction_only",
                               help="top classes and s(x) only (the same as --kinds prediction)")
        elif f.name == "threshold":
            threshold = group.add_mutually_exclusive_group()
            threshold.add_argument("--coverage", type=float, metavar="FRACTION",
                                   help=f"fraction of the pixels kept per region, (0, 1] (default "
                                        f"{Threshold().coverage})")
            threshold.add_argument("--threshold", type=float, dest="absolute", metavar="T",
                                   help="absolute threshold T in [0, 1) on the max-normalised map, instead of "
                                        "--coverage")
        elif f.name in ("dims", "counter_classes"):
            kind = int_list if f.name == "dims" else _comma_list
            group.add_argument(*flags, type=kind, action="extend", dest=f.name, metavar=symbol,
                               help=f"{help_text}, comma list or repeated {default}")
        elif f.name == "explained_class":
            group.add_argument(*flags, dest=f.name, metavar="LABEL|ID",
                               help=f"{help_text}; a label or an id (default: the prediction)")
        elif isinstance(value, bool):
            note = heatmap_note if f.name == "include_heatmaps" else ""
            group.add_argument(flags[0], action=argparse.BooleanOptionalAction, dest=f.name, default=None,
                               help=f"{help_text} {default}{note}")
        elif isinstance(value, int):
            group.add_argument(flags[0], type=int, dest=f.name, metavar=symbol, help=f"{help_text} {default}")
        elif isinstance(value, enum.Enum):
            group.add_argument(flags[0], choices=choices(type(value)), dest=DEST.get(f.name, f.name),
                               help=f"{help_text} {default}")
        else:
            raise TypeError(f"ExplainOptions.{f.name}: no command-line spelling for {type(value).__name__}")
    group.add_argument(*EXEMPLAR_FLAGS, type=_comma_list, action="extend", dest="exemplars", metavar="IMG",
                       help="exemplar image of each counter class, by position: comma list or repeated")


def flag_for(field: str) -> str:
    """'options.top_e' or 'top_e' (a field an error names) -> '--top-e', the flag that sets it."""
    name = field.removeprefix("options.").split(".")[0].split("[")[0]
    return FLAGS.get(name, ("--" + name.replace("_", "-"),))[0]


def settings_from_args(args: argparse.Namespace, counter_classes: tuple[int | str, ...] | None = None,
                       include_heatmaps: bool | None = None, explained_class: int | None = None
                       ) -> ExplainSettings:
    """Parsed flags -> ExplainSettings (InvalidArgument naming the field). ``counter_classes`` /
    ``explained_class``: already resolved ids (else the flags as given, digits as ids); ``include_heatmaps``: used
    when the flag is unset."""
    kinds = [k for k in (args.kinds or ()) if k]
    prediction_only = args.prediction_only or (bool(args.kinds) and not kinds)
    if counter_classes is None:
        counter_classes = tuple(int(c) if c.isdigit() else c for c in dict.fromkeys(args.counter_classes or ()))
    scalars = [f.name for f in fields(ExplainOptions) if f.name not in ("kinds", "dims", "counter_classes",
                                                                        "threshold")]
    values = {name: getattr(args, DEST.get(name, name)) for name in scalars}
    if values["include_heatmaps"] is None:
        values["include_heatmaps"] = include_heatmaps
    if explained_class is not None:
        values["explained_class"] = explained_class
    if args.dims:
        values["dims"] = tuple(args.dims)
    return ExplainSettings(kinds=tuple(dict.fromkeys(kinds)), prediction_only=prediction_only,
                           counter_classes=counter_classes, coverage=args.coverage, absolute=args.absolute,
                           **values)
