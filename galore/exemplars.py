"""Exemplar images x^c of counter classes (eq. 13) and their cached backbone features.

Two sources, one store: the model's bank (registered once, features computed at registration) and exemplars sent
with a request (keyed by content hash, kept in an LRU cache that is trimmed only after the batch that may still use
an entry). An exemplar shared by several images of a batch is one feature row.

The bank keeps every image of a class. When a request brings no exemplar for a counter class, ``bank_key`` picks
one by ``ExemplarPolicy``: RANDOM, the paper's draw from the counter class (Fig. 5), uniform over the class's bank
images and seeded by the query image and the class, so the same request always gets the same exemplar; or
MOST_CONFIDENT, the image the model gives the highest probability h_c of that class (first added on ties).
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

from .device import host_side
from .errors import InvalidArgument
from .options import ExemplarPolicy
from .preprocess import Geometry


@dataclass(frozen=True, eq=False)
class Features:
    """Backbone outputs of one image: F (D, h, w), the hardness predictor's F_s (D_s, h_s, w_s) or None, and where
    the model's crop lies in the original image. Compared by identity: one object is one attribution row."""

    F: torch.Tensor
    Fs: torch.Tensor | None
    geo: Geometry


@dataclass(frozen=True)
class BankEntry:
    key: str
    features: Features
    confidence: float  # h_c(x^c): the model's probability of the bank class for this image


class ExemplarStore:
    """Bank exemplars by class, request exemplars by content hash; counts cache hits and misses."""

    def __init__(self, cache_size: int = 256):
        self._bank: dict[int, list[BankEntry]] = {}
        self._by_key: dict[str, Features] = {}
        self._cache: OrderedDict[str, Features] = OrderedDict()
        self._cache_size = cache_size
        self.hits = 0
        self.misses = 0

    @property
    def bank_classes(self) -> tuple[int, ...]:
        return tuple(sorted(self._bank))

    @property
    def bank_counts(self) -> dict[int, int]:
        """Class id -> number of bank exemplars."""
        return {c: len(entries) for c, entries in sorted(self._bank.items())}

    def add_to_bank(self, class_id: int, key: str, features: Features, confidence: float) -> None:
        """Adds one more exemplar of ``class_id``; a key added again replaces its earlier entry."""
        entries = [e for e in self._bank.get(class_id, []) if e.key != key]
        self._bank[class_id] = entries + [BankEntry(key, features, float(confidence))]
        self._by_key[key] = features

    def bank_key(self, class_id: int, policy: ExemplarPolicy, seed: Callable[[], bytes]) -> str | None:
        """The bank exemplar of ``class_id`` chosen by ``policy`` (a cache hit), or None when the bank has none.
        ``seed()``: bytes identifying the query image, read only for a random draw among several exemplars."""
        entries = self._bank.get(class_id)
        if not entries:
            return None
        self.hits += 1
        if len(entries) == 1:
            return entries[0].key
        if policy is ExemplarPolicy.MOST_CONFIDENT:
            return max(entries, key=lambda e: e.confidence).key  # max keeps the first on ties
        digest = hashlib.sha256(seed() + class_id.to_bytes(8, "little", signed=True)).digest()
        return entries[int.from_bytes(digest[:8], "little") % len(entries)].key

    def request_keys(self, exemplars: dict[int, torch.Tensor], sizes: dict[int, tuple[int, int]],
                     pending: dict[str, tuple], preprocess) -> dict[int, str]:
        """Content-hash keys of a request's own exemplars (``sizes``: original sizes of reduced decodes); uncached
        ones are preprocessed into ``pending`` (key -> (x, geometry)) for the batch's one backbone call."""
        keys = {}
        for c, image in exemplars.items():
            size = sizes.get(c)
            with host_side():  # the request's own bytes, on the host
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
