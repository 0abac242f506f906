"""Where the engine's tensors live, and the few places where data crosses between host and device.

Every tensor of the hot path is created on the engine's device (``device=``, ``new_*``, ``*_like``) or derived
from one. Host values (index lists, rules) cross to the device through ``to_device``: from pinned memory with
``non_blocking``, so the host never waits. Results cross back through ``to_host``: every tensor of a list copied
at once, with ONE wait for the device. Anything else that reads a device value on the host (``.tolist()``,
``.item()``, ``bool(t)``, ``nonzero()``, indexing with a Python list, which is a blocking host-to-device copy) is a
host-device synchronisation; ``SyncCounter`` counts them, on any device.

Example:
    >>> with SyncCounter() as syncs:
    ...     t = to_device([1, 2, 3], torch.device("cpu"), torch.long)
    ...     (host,) = to_host([t * 2])
    ...     _ = bool(t.sum() > 0)          # a data-dependent branch: one sync
    >>> syncs.count, dict(syncs.points)
    (2, {'to_host': 1, '__bool__': 1})
"""
from __future__ import annotations

import contextlib
import threading
from collections import Counter
from typing import Sequence

import torch
from torch.overrides import TorchFunctionMode

# Tensor methods and torch functions that make the host wait for the device when their tensor lives there.
SYNC_POINTS = frozenset({"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "nonzero", "unique",
                         "numpy", "cpu", "masked_select"})
INDEXING = frozenset({"__getitem__", "__setitem__", "index_put_", "index_put"})

_local = threading.local()


def to_device(values: Sequence, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Host values (a list of numbers, or of equal-length lists) -> a tensor on ``device`` without waiting: built
    on the host, pinned and copied with ``non_blocking`` on CUDA (the caching host allocator keeps the pinned
    buffer alive until the copy is done)."""
    host = torch.tensor(values, dtype=dtype, device="cpu")
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)


def to_host(tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Device tensors -> host (CPU) tensors, detached, with ONE wait for the device for the whole list: on CUDA
    each is copied with ``non_blocking`` into pinned memory, then the stream is synchronised once."""
    _count("to_host")
    with _paused():
        if not tensors or all(t.device.type == "cpu" for t in tensors):
            return [t.detach() for t in tensors]
        out = []
        for t in tensors:
            host = torch.empty(t.shape, dtype=t.dtype, device="cpu",
                               pin_memory=t.device.type == "cuda")
            host.copy_(t.detach(), non_blocking=True)
            out.append(host)
        devices = {t.device for t in tensors if t.device.type == "cuda"}
        for device in devices:
            torch.cuda.current_stream(device).synchronize()
        return out


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA); nothing elsewhere. For timings at metric granularity only."""
    if device.type == "cuda":
        _count("synchronize")
        torch.cuda.synchronize(device)


class SyncCounter(TorchFunctionMode):
    """Counts host-device synchronisations at the known sync points, on any device (CPU included, where they cost
    nothing but would each stall a GPU): ``to_host`` (one per call), the tensor reads in ``SYNC_POINTS``, indexing
    with a Python list (a blocking host-to-device copy on a GPU), and ``synchronize``. It cannot see a tensor built
    on the host and used on the device (a blocking copy too): tests/engine/test_device.py's lint forbids those.
    Host-side work on tensors that ``to_host`` returned runs inside ``host_side()`` and is not counted.

    ``count`` is the total, ``points`` the count per sync point. On CUDA, ``torch.cuda.set_sync_debug_mode("warn")``
    is the driver's own count of the same thing (benchmarks/syncs.py)."""

    def __init__(self):
        super().__init__()
        self.points: Counter[str] = Counter()

    @property
    def count(self) -> int:
        return sum(self.points.values())

    def __enter__(self):
        self._outer = getattr(_local, "counter", None)
        _local.counter = self
        return super().__enter__()

    def __exit__(self, *exc):
        _local.counter = self._outer
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not getattr(_local, "paused", False):
            name = getattr(func, "__name__", "")
            if name in SYNC_POINTS or (name in INDEXING and len(args) > 1 and _host_index(args[1])):
                self.points[name] += 1
        return func(*args, **kwargs)


def _host_index(index) -> bool:
    """True when an index holds a Python list: torch copies it to the tensor's device, blocking, on a GPU."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, list) for p in parts)


def _count(point: str) -> None:
    counter = getattr(_local, "counter", None)
    if counter is not None and not getattr(_local, "paused", False):
        counter.points[point] += 1


@contextlib.contextmanager
def _paused():
    before = getattr(_local, "paused", False)
    _local.paused = True
    try:
        yield
    finally:
        _local.paused = before


def host_side() -> contextlib.AbstractContextManager:
    """Context for work on host tensors that ``to_host`` returned: their reads are not syncs, so not counted."""
    return _paused()
