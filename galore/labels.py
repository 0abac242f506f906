"""Class labels: one label per class, in class-id order. The one rule for a label file (the build script, the worker
and the CLI read it) and for the labels an engine is given. No torch.

A label names its class in requests (``counter_classes`` by label) and in the exemplar bank's folders, so labels
must be unique and non-empty. A label file is UTF-8 with or without a byte-order mark (what Windows editors write);
surrounding whitespace and trailing blank lines are ignored.

Example:
    >>> unique_labels(["cat", "dog"], "labels")
    ('cat', 'dog')
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from .errors import InvalidArgument


def read_labels(path: str | Path, field: str) -> tuple[str, ...]:
    """The labels of the file at ``path``; InvalidArgument naming ``field`` (and the line) when the file is
    missing, empty, has an empty line between labels, or repeats a label."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InvalidArgument(field, f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(field, f"{path} cannot be read as UTF-8 text ({exc})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InvalidArgument(field, f"{path} holds no labels; write one label per line, in class-id order")
    for number, line in enumerate(lines, 1):
        if not line:
            raise InvalidArgument(field, f"{path}: line {number} is empty; write one label per line, in class-id "
                                         "order")
    return unique_labels(lines, field, where=f"{path}: ")


def unique_labels(labels: Iterable[str], field: str, where: str = "") -> tuple[str, ...]:
    """``labels`` as a tuple, checked: each a non-empty string, none repeated; InvalidArgument naming ``field``."""
    labels = tuple(labels)
    first: dict[str, int] = {}
    for class_id, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InvalidArgument(field, f"{where}class {class_id} has an empty label")
        if label in first:
            lines = f" (lines {first[label] + 1} and {class_id + 1})" if where else ""
            raise InvalidArgument(field, f"{where}label {label!r} names classes {first[label]} and {class_id}{lines}; "
                                         "labels must be unique")
        first[label] = class_id
    return labels
