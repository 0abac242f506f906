"""Label files and an engine's labels: one rule (galore.labels) for the build script, the worker and the CLI."""
from __future__ import annotations

import pytest
import torch

from galore import Engine, InvalidArgument
from galore.labels import read_labels
from model_store.build import BuildError, _read_labels


@pytest.mark.parametrize("raw, expected", [
    (b"apple\nbanana\n", ("apple", "banana")),
    (b"\xef\xbb\xbfapple\r\nbanana\r\n", ("apple", "banana")),  # what Windows Notepad writes: BOM, CRLF
    (b"  apple \nbanana\n\n\n", ("apple", "banana")),  # surrounding spaces, trailing blank lines
])
def test_a_label_file_reads_as_its_editor_meant_it(tmp_path, raw, expected):
    (tmp_path / "labels.txt").write_bytes(raw)
    assert read_labels(tmp_path / "labels.txt", "--labels") == expected


@pytest.mark.parametrize("raw, says", [
    (b"apple\n\nbanana\n", "line 2 is empty"),
    (b"apple\nbanana\napple\n", "label 'apple' names classes 0 and 2 (lines 1 and 3)"),
    (b"\n\n", "holds no labels"),
    (b"\xff\xfeapple", "cannot be read as UTF-8"),
])
def test_a_bad_label_file_is_refused_naming_the_line(tmp_path, raw, says):
    (tmp_path / "labels.txt").write_bytes(raw)
    with pytest.raises(InvalidArgument) as caught:
        read_labels(tmp_path / "labels.txt", "handler.labels")
    assert caught.value.field == "handler.labels" and says in caught.value.message
    with pytest.raises(BuildError, match=f"--labels: .*{says[:12]}"):
        _read_labels(tmp_path / "labels.txt")


def test_an_engine_refuses_repeated_labels_since_a_label_names_its_class_in_requests():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(InvalidArgument) as caught:
        Engine.from_module("m", model, ["cat", "dog", "cat"], device="cpu")
    assert caught.value.field == "labels" and "'cat' names classes 0 and 2" in caught.value.message
    engine = Engine.from_module("m", model, ["cat", "dog", "cow"], device="cpu")
    assert engine.class_id("cow") == 2
