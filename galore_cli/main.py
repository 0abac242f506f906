"""galore: explain images with a GALORE server or in-process, describe the model, load-test the service, measure
how faithful the explanations are, and train the hardness predictor.

    galore explain IMAGE|FOLDER... [--server grpc://HOST:PORT | http://HOST:PORT | --local] [--out DIR] [--json]
    galore models [--server ... | --local] [--json]
    galore loadtest ...
    galore evaluate deletion|types|sanity|pointing|all [--photos DIR] [--out DIR]  (faithfulness metrics)
    galore evaluate proxy CUB_200_2011 --arch ARCH --state-dict PT  (the paper's proxy protocol, §VI-B)
    galore evaluate synthetic [--quick] --out DIR  (the proxy protocol on generated birds)
    galore train-hardness DATA --out DIR  (the hardness predictor of the easiness score, eq. 23)

"explain" prints a summary per image (top classes, s(x), insecurities ranked by strength, counterfactual
strength) and writes PNG figures plus a self-contained report.html into --out.

Exit status: 0 every image explained; 1 some images failed (unreadable, or refused by the service; each one's
reason is printed, the others are still explained); 2 bad input (missing file, unknown class, invalid option, or
the service rejected the whole request); 3 the server cannot be reached or timed out; 4 any other service error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from galore.errors import InvalidArgument
from galore.options import DEFAULT_MODEL
from galore_client.errors import GaloreClientError
from galore_client.results import Explanation, ImageFailure
from galore_client.settings import ExplainSettings, ModelSummary, UnknownClass
from galore_wire.contract import DEFAULT_SERVER, DEFAULT_TIMEOUT_S, Call

from .evaluate import add_evaluate_parser
from .images import ImageFileError, expand_paths, read_image
from .option_args import add_option_arguments, flag_for, settings_from_args
from .report import ReportEntry, ReportWriter, summary_dict, summary_text
from .status import (BAD_INPUT_CODES, EXIT_BAD_INPUT, EXIT_IMAGE_FAILED, EXIT_OK, EXIT_SERVICE_ERROR,  # noqa: F401
                     EXIT_UNAVAILABLE, UNREACHABLE_CODES, CliError)
from .train_hardness import add_parser as add_train_hardness


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except CliError as exc:
        print(f"galore {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print(f"galore {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    explain = commands.add_parser("explain", help="explain images and write a visual report",
                                  description="Explain images: prediction, attributive, self-aware, deliberative "
                                              "(insecurities) and counterfactual explanations.")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders of images")
    _add_target_arguments(explain)
    explain.add_argument("--out", default="galore-report", metavar="DIR",
                         help="folder for the PNG figures and report.html (default: galore-report)")
    explain.add_argument("--no-report", action="store_true", help="print the summary only, write no files")
    add_option_arguments(explain, heatmap_note="; on when a report is written, for its heatmap overlays")
    explain.add_argument("--batch-size", type=int, default=8, help="images per call (default 8)")
    explain.add_argument("--no-progress", action="store_true", help="no progress bar")
    explain.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    explain.set_defaults(func=run_explain)

    models = commands.add_parser("models", help="describe the served (or local) model")
    _add_target_arguments(models)
    models.add_argument("--labels", action="store_true", help="also list every class id and label")
    models.add_argument("--json", action="store_true", help="print machine-readable JSON")
    models.set_defaults(func=run_models)

    _add_loadtest(commands)
    add_evaluate_parser(commands)
    add_train_hardness(commands)
    return parser


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--server", default=os.environ.get("GALORE_SERVER", DEFAULT_SERVER), metavar="URL",
                       help="grpc://HOST:PORT (gateway), grpcs://HOST:PORT (TLS) or http(s)://HOST:PORT "
                            "(TorchServe REST); default $GALORE_SERVER or " + DEFAULT_SERVER)
    where.add_argument("--local", action="store_true", help="run the engine in this process, no server")
    parser.add_argument("--device", help="with --local: torch device (default: CUDA if present, else CPU)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"TorchServe model name (REST; default {DEFAULT_MODEL})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"seconds per call (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--retries", type=int, default=3, help="retries on UNAVAILABLE (HTTP 503), 0-4, after a jittered backoff or the server's "
                             "own hint; gRPC also keeps a retry budget (default 3)")
    parser.add_argument("--token", default=os.environ.get("GALORE_TOKEN"),
                        help="bearer token sent with each call (default $GALORE_TOKEN)")
    parser.add_argument("--ca-cert", metavar="PEM", help="CA certificate for grpcs:// or https://")


def _add_loadtest(commands) -> None:
    try:
        from .loadtest import add_loadtest_parser
    except ImportError as exc:  # generated protobuf code missing
        parser = commands.add_parser("loadtest", help="load the running service (needs `make protos`)")
        parser.set_defaults(func=lambda args, error=exc: _missing(error))  # ``exc`` is unbound after the block
        return
    add_loadtest_parser(commands)


def _missing(exc: ImportError) -> int:
    raise CliError(f"the generated galore_api package is missing ({exc}); run `make protos`", EXIT_BAD_INPUT)


class RemoteBackend:
    """The CLI's view of a server: ``GaloreClient`` with image files in and typed results out."""

    def __init__(self, client):
        self.client = client

    def model_info(self) -> ModelSummary:
        return self.client.model_info()

    def explain(self, files, settings: ExplainSettings, exemplars) -> list:
        return self.client.explain([f.data for f in files], settings,
                                   {key: ex.data for key, ex in exemplars.items()},
                                   ids=[Path(f.name).name[-256:] for f in files])

    def close(self) -> None:
        self.client.close()


def open_backend(args):
    """The backend for ``--local`` or ``--server``: has ``model_info()``, ``explain(...)`` and ``close()``."""
    if args.local:
        from .local import LocalBackend

        try:
            return LocalBackend(device=args.device)
        except Exception as exc:  # noqa: BLE001 - report any engine start-up problem as a message, not a trace
            raise CliError(f"cannot start the local engine: {exc}", EXIT_SERVICE_ERROR) from exc
    try:
        from galore_client.client import GaloreClient
    except ImportError as exc:
        _missing(exc)
    try:
        client = GaloreClient(args.server, model=args.model, timeout_s=args.timeout, retries=args.retries,
                              token=args.token, ca_cert=args.ca_cert)
    except ValueError as exc:
        raise CliError("--" + str(exc).replace("ca_cert", "ca-cert"), EXIT_BAD_INPUT) from exc
    return RemoteBackend(client)


def status_for(code: str) -> int:
    """Exit status for a service error code name."""
    if code in BAD_INPUT_CODES:
        return EXIT_BAD_INPUT
    if code in UNREACHABLE_CODES:
        return EXIT_UNAVAILABLE
    return EXIT_SERVICE_ERROR


def _call(what: str, fn, *args):
    """Runs a backend call; a GaloreClientError becomes a CliError with the exit status for its code."""
    try:
        return fn(*args)
    except GaloreClientError as exc:
        hint = " (is the server running? `make serve` starts it)" if exc.code == "UNAVAILABLE" else ""
        raise CliError(f"{what} failed: {exc}{hint}", status_for(exc.code)) from exc


def build_settings(args, summary: ModelSummary) -> ExplainSettings:
    exemplars, counters = args.exemplars or [], args.counter_classes or []
    if exemplars and len(exemplars) != len(counters):
        raise CliError(f"--exemplar: give one exemplar per --counter ({len(counters)} counter classes, "
                       f"{len(exemplars)} exemplars)", EXIT_BAD_INPUT)
    try:
        ids = tuple(summary.class_id(name, field="--counter") for name in counters)
        explained = None if args.explained_class is None else summary.class_id(args.explained_class,
                                                                               field="--explain-class")
        return settings_from_args(args, counter_classes=ids, include_heatmaps=True if not args.no_report else None,
                                  explained_class=explained)
    except InvalidArgument as exc:
        raise CliError(f"{flag_for(exc.field)}: {exc.message}", EXIT_BAD_INPUT) from exc
    except (UnknownClass, ValueError) as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from exc


def run_explain(args) -> int:
    if args.batch_size < 1:
        raise CliError(f"--batch-size: must be >= 1, got {args.batch_size}", EXIT_BAD_INPUT)
    try:
        paths = expand_paths(args.images)
        exemplar_files = [read_image(path) for path in args.exemplars or ()]
    except ImageFileError as exc:
        raise CliError(str(exc), EXIT_BAD_INPUT) from exc
    backend = open_backend(args)
    try:
        summary = _call(Call.MODEL_INFO.value, backend.model_info)
        settings = build_settings(args, summary)
        exemplars = dict(zip(settings.counter_classes, exemplar_files))
        batch = args.batch_size
        if summary.max_images_per_request:
            batch = max(1, min(batch, summary.max_images_per_request - len(exemplars)))
        writer = None if args.no_report else ReportWriter(args.out, title=f"GALORE explanations ({summary.name})")
        results, failed = [], 0
        with _progress(len(paths), args) as bar:
            for start in range(0, len(paths), batch):
                chunk = paths[start:start + batch]
                loaded = [_load(path) for path in chunk]  # an unreadable image fails alone, not the batch
                files = [item for item in loaded if not isinstance(item, Explanation)]
                answers = iter(_call(Call.EXPLAIN.value, backend.explain, files, settings, exemplars) if files else ())
                for path, item in zip(chunk, loaded):
                    explanation = item if isinstance(item, Explanation) else next(answers)
                    failed += not explanation.ok
                    results.append(summary_dict(str(path), explanation))
                    if not args.json:
                        bar.write(summary_text(str(path), explanation))
                    if writer is not None:
                        writer.add(ReportEntry(str(path), None if isinstance(item, Explanation) else item.pixels,
                                               explanation, _exemplar_pixels(explanation, exemplar_files)))
                bar.update(len(chunk))
        report = writer.finish() if writer is not None else None
    finally:
        backend.close()
    if args.json:
        print(json.dumps({"model": summary.name, "images": results,
                          "report": str(report.html) if report else None}, indent=2))
    elif report is not None:
        print(f"report: {report.html}")
    if failed:
        print(f"galore explain: {failed} of {len(paths)} images failed", file=sys.stderr)
        return EXIT_IMAGE_FAILED
    return EXIT_OK


def _load(path: Path):
    """The image file, or a failed Explanation saying why it cannot be read."""
    try:
        return read_image(path)
    except ImageFileError as exc:
        return Explanation(error=ImageFailure("INVALID_ARGUMENT", exc.reason, "image"))


def _exemplar_pixels(explanation, exemplar_files) -> dict:
    """Counter class id -> the pixels of the exemplar file given for it (files follow --counter order)."""
    cf = explanation.counterfactual
    if cf is None or not exemplar_files:
        return {}
    return {ref.class_id: exemplar_files[i].pixels for i, ref in enumerate(cf.counter) if i < len(exemplar_files)}


def run_models(args) -> int:
    backend = open_backend(args)
    try:
        info = _call(Call.MODEL_INFO.value, backend.model_info)
    finally:
        backend.close()
    if args.json:
        data = {"name": info.name, "architecture": info.architecture, "layer": info.layer,
                "feature_grid": list(info.feature_grid), "input_size": info.input_size,
                "num_classes": len(info.labels), "scores": list(info.scores),
                "attributions": list(info.attributions), "exemplar_class_ids": list(info.exemplar_class_ids),
                "exemplars_per_class": {str(c): n for c, n in info.exemplars_per_class},
                "has_hardness_predictor": info.has_hardness_predictor,
                "max_images_per_request": info.max_images_per_request, "max_batch_size": info.max_batch_size}
        if args.labels:
            data["labels"] = list(info.labels)
        print(json.dumps(data, indent=2))
        return EXIT_OK
    h, w = info.feature_grid
    lines = [f"model: {info.name}" + (f" ({info.architecture})" if info.architecture else ""),
             f"classes: {len(info.labels)}",
             f"feature layer: {info.layer} ({h}x{w} grid, {info.input_size} px crop)",
             f"scores: {', '.join(info.scores)}",
             f"attributions: {', '.join(info.attributions)}",
             f"hardness predictor: {'yes' if info.has_hardness_predictor else 'no'}",
             "exemplar bank: " + (", ".join(f"{info.label(c)} ({n})" for c, n in info.exemplars_per_class)
                                  or ", ".join(info.label(c) for c in info.exemplar_class_ids) or "empty")]
    if info.max_images_per_request:
        lines.append(f"max images per request: {info.max_images_per_request}")
    if info.max_batch_size:
        lines.append(f"max batch size: {info.max_batch_size}")
    if args.labels:
        lines += [f"{i:5d}  {label}" for i, label in enumerate(info.labels)]
    print("\n".join(lines))
    return EXIT_OK


def _progress(total: int, args):
    return tqdm(total=total, unit="img", file=sys.stderr, leave=False, mininterval=0,  # redraw on every batch
                disable=True if (args.no_progress or total < 2) else None)


if __name__ == "__main__":
    sys.exit(main())
