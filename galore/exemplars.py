"""Exemplar images x^c of counter classes (eq. 13) and their cached backbone features.

Two sources, one store: the model's bank (registered once, features computed at registration) and exemplars sent
with a request (keyed by content hash, kept in an LRU cache that is trimmed only after the batch that may still use
an entry). An exemplar shared by several images of a batch is one feature row.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import torch

from .errors import InvalidArgument
from .preprocess import Geometry


@dataclass(frozen=True, eq=False)
class Features:
    """Backbone outputs of one image: F (D, h, w), the hardness predictor's F_s (D_s, h_s, w_s) or None, and where
    the model's crop lies in the original image. Compared by identity: one object is one attribution row."""

    F: torch.Tensor
    Fs: torch.Tensor | None
    geo: Geometry


class ExemplarStore:
    """Bank exemplars by class, request exemplars by content hash; counts cache hits and misses."""

    def __init__(self, cache_size: int = 256):
        self._bank: dict[int, tuple[str, Features]] = {}
        self._by_key: dict[str, Features] = {}
        self._cache: OrderedDict[str, Features] = OrderedDict()
        self._cache_size = cache_size
        self.hits = 0
        self.misses = 0

    @property
    def bank_classes(self) -> tuple[int, ...]:
        return tuple(sorted(self._bank))

    def add_to_bank(self, class_id: int, key: str, features: Features) -> None:
        self._bank[class_id] = (key, features)
        self._by_key[key] = features

    def bank_key(self, class_id: int) -> str | None:
        """The bank exemplar of ``class_id`` (a cache hit), or None."""
        if class_id not in self._bank:
            return None
        self.hits += 1
        return self._bank[class_id][0]

    def request_keys(self, exemplars: dict[int, torch.Tensor], sizes: dict[int, tuple[int, int]],
                     pending: dict[str, tuple], preprocess) -> dict[int, str]:
        """Content-hash keys of a request's own exemplars (``sizes``: original sizes of reduced decodes); uncached
        ones are preprocessed into ``pending`` (key -> (x, geometry)) for the batch's one backbone call."""
        keys = {}
        for c, image in exemplars.items():
            size = sizes.get(c)
            key = "sha1:" + hashlib.sha1(image.cpu().numpy().tobytes()).hexdigest() + f":{tuple(image.shape)}"
            key += f":{size[0]}x{size[1]}" if size else ""
            if key in self._cache or key in pending:
                self.hits += 1
                if key in self._cache:
                    self._cache.move_to_end(key)
            else:
                try:
                    pending[key] = preprocess(image, size, f"exemplars[{c}]")
                except InvalidArgument as err:
                    raise InvalidArgument(f"exemplars[{c}]", err.message) from None
                self.misses += 1
            keys[c] = key
        return keys

    def cache(self, key: str, features: Features) -> None:
        self._cache[key] = features

    def features(self, key: str) -> Features:
        return self._cache[key] if key in self._cache else self._by_key[key]

    def trim(self) -> None:
        """Evicts the oldest request exemplars beyond the cache size; call after a batch."""
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
