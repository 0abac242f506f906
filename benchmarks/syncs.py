"""Host-device synchronisations per ``engine.explain`` batch at B = 1, 4, 16, 64 (BENCHMARKS.md, "Syncs per batch").

    .venv/bin/python benchmarks/syncs.py                              # CPU, both regions paths
    .venv/bin/python benchmarks/syncs.py --device cuda                # + the CUDA driver's own count
    .venv/bin/python benchmarks/syncs.py --engine-root /tmp/before    # the engine of another checkout (e.g. main)

Counts, never times: the figures do not depend on the machine's speed or load. Workload: EfficientNet-Lite0
(``Engine.default``), photos from ``skimage.data`` cycled to fill the batch, every explanation kind, V = 2 and 3
over the top-5 classes, two counter classes with bank exemplars. One call on one image first (lazy caches), then
one counted call per batch size.

Counters:
  counted   ``galore.device.SyncCounter`` around the call: the known sync points (``to_host``; ``.tolist()``,
            ``.item()``, ``bool()``, ``nonzero()``... on tensors; indexing with a Python list), on any device. On
            a CPU engine it counts what each of those would cost on a GPU. It cannot see a host-to-device copy of a
            tensor built without ``device=`` (tests/engine/test_device.py's lint forbids those), so for an engine
            that has them (``--engine-root`` at main before issue 20) the count is a lower bound.
  driver    with ``--device cuda``: warnings of ``torch.cuda.set_sync_debug_mode("warn")``, CUDA's own count.
Regions paths: ``cpu`` (host branches, free on a CPU: the default there) and ``sync-free`` (the default on every
other device; ``WorkingGrid.sync_free``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel")
COUNTERS = ((340, "coffee"), (291, "cat"))  # zebra, lion: never the prediction for these photos; bank exemplars
SIZES = (1, 4, 16, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="batch sizes, comma-separated")
    parser.add_argument("--engine-root", type=Path, default=REPO,
                        help="checkout whose galore/ engine is counted (the counter always comes from this one)")
    parser.add_argument("--paths", default="cpu,sync-free", help="regions paths to count (cpu, sync-free)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    counter_cls = _counter(args.engine_root)
    sys.path.insert(0, str(args.engine_root))
    import skimage.data
    import torch
    from galore import Engine, ExplainOptions, ImageRequest, Kind

    engine = Engine.default(device=args.device)
    for class_id, name in COUNTERS:
        engine.add_exemplar(class_id, _photo(skimage.data, name, torch), f"bank:{name}")
    options = ExplainOptions(kinds=frozenset(Kind), dims=(2, 3), top_e=5, counter_classes=tuple(c for c, _ in COUNTERS))
    photos = [_photo(skimage.data, name, torch) for name in PHOTOS]
    new_engine = hasattr(engine.grid, "sync_free")
    paths = [p for p in args.paths.split(",") if new_engine or p == "cpu"]
    rows = []
    for path in paths:
        if new_engine:
            engine.grid.sync_free = path == "sync-free"
        engine.explain([ImageRequest(photos[0], options)])  # untimed: lazy caches
        for B in sizes:
            requests = [ImageRequest(photos[i % len(photos)], options) for i in range(B)]
            driver = None
            with counter_cls() as syncs:
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("warn")
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        results = engine.explain(requests)
                    torch.cuda.set_sync_debug_mode(0)
                    driver = sum("synchroniz" in str(w.message) for w in caught)
                else:
                    results = engine.explain(requests)
            ok = sum(r.ok for r in results)
            rows.append({"path": path, "batch": B, "counted": syncs.count, "per_image": syncs.count / B,
                         "driver": driver, "ok": ok, "points": dict(syncs.points)})
            print(f"{path:9s} B={B:3d}: {syncs.count:5d} syncs ({syncs.count / B:.1f} per image), {ok}/{B} ok "
                  f"{'' if driver is None else f'driver {driver} '}{dict(sorted(syncs.points.items()))}", flush=True)
    machine = _machine(args.device, torch)
    print(f"\n{args.engine_root} ({_commit(args.engine_root)}), {machine}")
    print("| regions path | " + " | ".join(f"B={B}" for B in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for path in paths:
        counts = {r["batch"]: r for r in rows if r["path"] == path}
        print(f"| {path} | " + " | ".join(f"{counts[B]['counted']}" + (f" (driver {counts[B]['driver']})"
                                                                         if counts[B]["driver"] is not None else "")
                                          for B in sizes) + " |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "commit": _commit(args.engine_root), "rows": rows},
                                        indent=1))


def _counter(root: Path):
    """SyncCounter from THIS checkout; the engine's own module when counting this checkout (so ``to_host`` inside
    the engine reports to it), else loaded by path beside another checkout's engine (which has no ``to_host``)."""
    if root.resolve() == REPO:
        sys.path.insert(0, str(REPO))
        from galore.device import SyncCounter
        return SyncCounter
    spec = importlib.util.spec_from_file_location("_sync_counter", REPO / "galore" / "device.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SyncCounter


def _photo(data, name: str, torch):
    import numpy as np
    arr = getattr(data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()


def _commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"


def _machine(device: str, torch) -> str:
    from galore_cli.machine import cpu_model

    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else cpu_model()
    return f"{name}, torch {torch.__version__}"


if __name__ == "__main__":
    main()
