"""Correct on any device, checked without one, and few host-device synchronisations.

PyTorch's ``meta`` device has no data but makes the same device checks as CUDA: a CPU tensor (even an empty one)
meeting a meta tensor in one op raises "... is not on the expected device". So every device-generic stage (the
backbone and head, every attribution function, Table I, the regions of a batch) runs here on ``meta`` up to its
first data-dependent operation, which must be the engine's one copy to the host (``device.to_host``). A static
check backs it: no tensor factory in ``galore/`` may leave its device implicit.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from galore import Engine, ExplainOptions, ImageRequest, Kind
from galore.device import SyncCounter, to_host
from galore.engine import _Clock
from galore.exemplars import Features
from galore.kinds import Prediction, measure_batch, plan
from galore.options import Attribution, Threshold
from galore.regions import COMPILED, HOST_MAPS, Rule, WorkingGrid
from galore.results import ImageResult
from galore.rows import HeadPass, Row, attribute_rows, group_of

from .conftest import IDENTITY_PREP, gray_pool_model, quadrant_image

GALORE = Path(__file__).resolve().parents[2] / "galore"
FACTORIES = frozenset({"zeros", "ones", "empty", "full", "arange", "range", "tensor", "as_tensor", "rand", "randn",
                       "randint", "randperm", "eye", "linspace", "logspace", "empty_strided", "scalar_tensor"})
LABELS = ["zero", "one", "two"]
ALL_KINDS = frozenset(Kind)


def factories_without_device(source: str) -> list[tuple[int, str]]:
    """(line, call) of every ``torch.<factory>(...)`` call without a ``device=`` keyword."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FACTORIES
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"
                and not any(k.arg == "device" for k in node.keywords)):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_every_tensor_factory_in_galore_names_its_device():
    """A factory without ``device=`` makes a CPU tensor, which crashes the first op that meets a CUDA tensor (an
    empty one included). Host tensors say so: ``device="cpu"``."""
    offenders = [f"{path.relative_to(GALORE.parent)}:{line}: {call}" for path in sorted(GALORE.rglob("*.py"))
                 for line, call in factories_without_device(path.read_text())]
    assert not offenders, "tensor factories without device=:\n" + "\n".join(offenders)


def test_the_lint_flags_the_factories_it_should():
    source = "import torch\na = torch.zeros(0)\nb = torch.zeros(0, device=x.device)\nc = x.new_zeros(0)\n" \
             "d = torch.tensor([1], dtype=torch.long)\ne = torch.full_like(x, 1)\n"
    assert [line for line, _ in factories_without_device(source)] == [2, 5]


@pytest.mark.parametrize("threshold", [Threshold(coverage=0.1), Threshold(absolute=0.5)])
def test_working_grid_measures_on_meta_with_a_host_rule(threshold):
    """The issue's reproduction: a rule built on the host, maps on the device (M = 0 included)."""
    grid = WorkingGrid(224, 224)
    for M in (4, 0):
        maps = torch.rand(M, 7, 7, device="meta")
        m = grid.measure(maps, Rule.coverage_of(threshold, grid.cells).expand(M),
                         torch.ones(M, dtype=torch.bool))
        assert m.tau.device.type == "meta" and m.tau.shape == (M,) and m.kept.shape == (M,)
        assert grid.cell_masks(maps, m.tau).shape == (M, 224, 224)


def _meta_engine() -> Engine:
    return Engine.from_module("tiny", gray_pool_model(), LABELS, IDENTITY_PREP, layer="1", device="meta")


def _stopped_at_the_host_copy(excinfo: pytest.ExceptionInfo) -> None:
    """The stage ran on meta until its first data-dependent operation, the copy to the host."""
    assert excinfo.type is NotImplementedError and "meta" in str(excinfo.value), excinfo.value
    assert any(entry.name == "to_host" for entry in excinfo.traceback), excinfo.traceback


def test_backbone_and_head_run_on_meta_up_to_the_prediction_copy():
    """uint8 input to the device, normalised there, backbone and head: device-generic up to the one copy."""
    engine = _meta_engine()
    request = ImageRequest(quadrant_image(), ExplainOptions(dims=(2,), top_e=3), exemplars={})
    with pytest.raises(NotImplementedError) as excinfo:
        engine._explain([request], _Clock(None, engine.device))
    _stopped_at_the_host_copy(excinfo)


@pytest.mark.parametrize("attribution", list(Attribution))
@pytest.mark.parametrize("kinds, threshold", [
    (ALL_KINDS, Threshold(coverage=0.5)),
    (ALL_KINDS, Threshold(absolute=0.5)),
    (ALL_KINDS - {Kind.COUNTERFACTUAL}, Threshold(coverage=0.5)),  # no side at all: empty side tensors
])
def test_attribution_table_i_and_regions_run_on_meta_up_to_the_host_copy(attribution, kinds, threshold):
    """Every attribution function, Table I for every kind and the regions of a two-image batch (one with a
    counterfactual exemplar), on meta: the first data-dependent operation is the batch's one copy to the host."""
    engine = _meta_engine()
    geo = IDENTITY_PREP(quadrant_image())[1]
    shape = engine.split.feature_shape  # (D, h, w)
    query = [Features(torch.rand(shape, device="meta"), None, geo) for _ in range(2)]
    exemplar = Features(torch.rand(shape, device="meta"), None, geo)
    options = ExplainOptions(kinds=kinds, dims=(2, 3), top_e=3, counter_classes=(1,), threshold=threshold,
                             attribution=attribution)
    predictions = [Prediction(0, torch.tensor([0.5, 0.3, 0.2], device="cpu"), (0, 1, 2), (1,),
                              {1: "exemplar"} if Kind.COUNTERFACTUAL in kinds else {}, 0) for _ in query]
    group = group_of(options)
    rows = {id(f): Row(f).need([0, 1, 2]) for f in query}
    rows[id(exemplar)] = Row(exemplar).need([1, 0])
    head = HeadPass(engine.split.head, torch.stack([f.F for f in query]))
    head.index.update({id(f): b for b, f in enumerate(query)})
    maps = attribute_rows(engine.split, None, {group: rows}, head)
    items = []
    for f, pred in zip(query, predictions):
        exemplars = {1: (exemplar, maps[id(exemplar)][group])} if pred.exemplar_keys else {}
        p = plan(options, pred, maps[id(f)][group], exemplars)
        assert all(m.maps.device.type == "meta" and (m.sides is None or m.sides.device.type == "meta")
                   for _, m in p.parts)
        items.append((options, pred, p, f))
    for on_host in (False, True):  # the sync-free path on the device, then the coarse maps' copy to the host
        engine.grid.on_host = on_host
        with pytest.raises(NotImplementedError) as excinfo:
            measure_batch(engine.grid, items, tuple(LABELS), [ImageResult() for _ in items])
        _stopped_at_the_host_copy(excinfo)


def test_a_cached_exemplar_does_not_keep_its_batch_alive(tiny_engine):
    """Exemplar features are cached past their batch: each must own its storage, not be a view of the batch's F."""
    exemplar = quadrant_image(((0.9, 0.1), (0.3, 0.5)))
    options = ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(2,))
    requests = [ImageRequest(quadrant_image(), options, exemplars={2: exemplar}) for _ in range(3)]
    assert all(r.ok for r in tiny_engine.explain(requests))
    cached = [f for key, f in tiny_engine.exemplars._cache.items()]
    assert cached
    for f in cached:
        assert f.F.untyped_storage().nbytes() == f.F.numel() * f.F.element_size()  # its own, not (N, D, h, w)


def _requests(n: int) -> list[ImageRequest]:
    options = ExplainOptions(kinds=ALL_KINDS, dims=(2, 3), top_e=3, counter_classes=(1,))
    exemplar = quadrant_image(((0.9, 0.1), (0.3, 0.5)))
    return [ImageRequest(quadrant_image(((0.1 * (i % 5), 0.4), (0.6, 0.8))), options, exemplars={1: exemplar})
            for i in range(n)]


@pytest.mark.parametrize("grid", [{"sync_free": True}, {"on_host": True}])
def test_a_batch_costs_two_syncs_whatever_its_size(grid):
    """With either regions path off the CPU (sync-free on the device; the coarse maps copied and measured on the
    host): the prediction's copy and the regions' copy, for 1 image or 8, every kind, a counterfactual exemplar per
    image (SyncCounter: device.py)."""
    engine = Engine.from_module("tiny", gray_pool_model(), LABELS, IDENTITY_PREP, layer="1", device="cpu")
    for name, value in grid.items():
        setattr(engine.grid, name, value)
    counts = {}
    for n in (1, 8):
        with SyncCounter() as syncs:
            results = engine.explain(_requests(n))
        assert all(r.ok for r in results)
        counts[n] = dict(syncs.points)
    assert counts == {1: {"to_host": 2}, 8: {"to_host": 2}}


def test_off_the_cpu_few_maps_are_measured_on_the_host_where_the_kernel_is_built():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # devices as names: no GPU needed
    assert WorkingGrid(224, 224).measures_on_host(cuda, HOST_MAPS) is COMPILED
    assert not WorkingGrid(224, 224).measures_on_host(cuda, HOST_MAPS + 1)
    assert not WorkingGrid(224, 224).measures_on_host(cpu, 1)
    assert not WorkingGrid(224, 224, compiled=False).measures_on_host(cuda, 1)
    assert not WorkingGrid(224, 224, sync_free=True).measures_on_host(cuda, 1)
    assert not WorkingGrid(224, 224, on_host=False).measures_on_host(cuda, 1)
    assert WorkingGrid(224, 224, on_host=True).measures_on_host(cpu, 10 * HOST_MAPS) is True


def test_the_sync_counter_counts_reads_and_list_indexing_but_not_the_host_side():
    t = torch.arange(4, device="cpu")
    with SyncCounter() as syncs:
        t.tolist(), float(t[0]), t[[0, 1]], t.nonzero()
        if t.sum() > 0:
            pass
        (host,) = to_host([t])
        from galore.device import host_side
        with host_side():
            host.tolist()
    assert dict(syncs.points) == {"tolist": 1, "__float__": 1, "__getitem__": 1, "nonzero": 1, "__bool__": 1,
                                  "to_host": 1}


def test_sync_free_regions_give_the_same_results_as_the_cpu_path():
    """The engine's answers do not depend on which regions path ran (the CPU's, sync-free, maps copied to the host
    first): masks, kept cells and strengths agree."""
    engines = []
    for sync_free, on_host in ((False, None), (True, None), (None, True)):  # CPU, sync-free, copied to the host
        engine = Engine.from_module("tiny", gray_pool_model(), LABELS, IDENTITY_PREP, layer="1", device="cpu")
        engine.grid.sync_free, engine.grid.on_host = sync_free, on_host
        engines.append(engine)
    for threshold in (Threshold(coverage=0.5), Threshold(absolute=0.3)):
        requests = [ImageRequest(r.image, ExplainOptions(kinds=ALL_KINDS, dims=(2, 3), top_e=3, counter_classes=(1,),
                                                         threshold=threshold), exemplars=r.exemplars)
                    for r in _requests(3)]
        a, *others = (e.explain(requests) for e in engines)
        for x, y in ((x, y) for b in others for x, y in zip(a, b)):
            assert x.ok and y.ok
            regions = [(x.attributive.region, y.attributive.region), (x.self_aware.region, y.self_aware.region),
                       (x.counterfactual.query, y.counterfactual.query)]
            regions += [(s.region, t.region) for s, t in zip(x.counterfactual.exemplars, y.counterfactual.exemplars)
                        if s.region is not None]
            for V in x.deliberative:
                assert [i.class_ids for i in x.deliberative[V]] == [i.class_ids for i in y.deliberative[V]]
                regions += [(i.region, j.region) for i, j in zip(x.deliberative[V], y.deliberative[V])]
            for r, s in regions:
                assert (r.cells == s.cells).all()
                assert math.isclose(r.strength, s.strength, rel_tol=1e-6, abs_tol=1e-7)


class BrokenDevice(torch.nn.Module):
    """A real backbone that fails as a CUDA context does after an illegal memory access: on every call."""

    def __init__(self, message: str):
        super().__init__()
        self.message, self.calls = message, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        raise RuntimeError(self.message)


@pytest.mark.parametrize("message, unusable", [
    ("CUDA error: an illegal memory access was encountered", True),
    ("CUDA error: device-side assert triggered", True),
    ("CUDA error: out of memory", False),  # not sticky: becomes RESOURCE_EXHAUSTED per image
    ("some bug", False),
])
def test_a_sticky_device_error_is_raised_not_retried_image_by_image(message, unusable):
    import dataclasses

    from galore.errors import DeviceUnusable

    engine = Engine.from_module("tiny", gray_pool_model(), LABELS, IDENTITY_PREP, layer="1", device="cpu")
    broken = BrokenDevice(message)
    engine.split = dataclasses.replace(engine.split, backbone=broken)
    requests = [ImageRequest(quadrant_image(), ExplainOptions(top_e=3)) for _ in range(3)]
    if unusable:
        with pytest.raises(DeviceUnusable, match="illegal memory access|device-side assert"):
            engine.explain(requests)
        assert broken.calls == 1  # the batch only: no per-image retries on a dead context
    else:
        results = engine.explain(requests)
        codes = {r.error.code for r in results}
        assert codes == ({"RESOURCE_EXHAUSTED"} if "out of memory" in message else {"INTERNAL"})
        assert broken.calls == 1 + len(requests)  # the batch, then each image alone
