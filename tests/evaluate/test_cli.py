"""`galore evaluate` end to end on the default model: help, a real run writing JSON, markdown and PNG, bad input."""
from __future__ import annotations

import json

import pytest

from galore_cli import main as cli


def test_help_documents_every_metric_with_its_reference(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    text = capsys.readouterr().out
    for word in ("deletion", "types", "sanity", "pointing", "RISE", "Adebayo", "Böhle", "Finer-CAM", "SSIM"):
        assert word in text


def test_deletion_run_writes_reports(tmp_path, capsys):
    out = tmp_path / "ev"
    status = cli.main(["evaluate", "deletion", "--limit", "1", "--steps", "2", "--no-references", "--post",
                       "clip,minmax", "--out", str(out), "--json"])
    assert status == 0
    data = json.loads((out / "deletion.json").read_text())
    assert data["photos"] == ["chelsea"] and data["baseline"] == "blur"
    methods = [r["method"] for r in data["summary"]]
    assert methods == ["gradient_x_activation/logit/clip/softmax", "gradient_x_activation/logit/minmax/softmax"]
    curve = data["curves"][0]
    assert curve["fractions"] == [0.0, 0.5, 1.0]
    # everything removed = the blurred crop, whatever the map; nothing removed = the photo itself
    assert data["curves"][1]["deletion"][2] == pytest.approx(curve["deletion"][2], abs=1e-6)
    assert curve["deletion"][0] == pytest.approx(curve["insertion"][2], abs=1e-6)
    assert "| method |" in (out / "deletion.md").read_text()
    assert (out / "deletion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(capsys.readouterr().out)["deletion"][0]["photos"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--attribution", "saliency"], "unknown value 'saliency'"),
    (["--post", "squash"], "unknown value 'squash'"),
    (["--score", "easiness"], "easiness needs a hardness predictor"),
    (["--limit", "0"], "--limit must be >= 1"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, message):
    assert cli.main(["evaluate", "deletion", "--out", str(tmp_path)] + argv) == 2
    assert message in capsys.readouterr().err


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert cli.main(["evaluate", "deletion", "--photos", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_all_runs_every_metric(tmp_path, capsys, monkeypatch):
    from galore import combiner
    monkeypatch.setattr(combiner, "COMPLEMENT", combiner.COMPLEMENT)  # --complement sets it for the process
    other = "shared" if combiner.COMPLEMENT is combiner.Complement.PER_MAP else "per_map"
    out = tmp_path / "all"
    status = cli.main(["evaluate", "all", "--limit", "4", "--steps", "1", "--insecurities", "1", "--random-draws",
                       "1", "--max-steps", "1", "--no-references", "--no-plot", "--complement", other,
                       "--out", str(out)])
    assert status == 0
    for metric in ("deletion", "types", "pointing", "sanity"):
        data = json.loads((out / f"{metric}.json").read_text())
        assert data["metric"] == metric and data["photos"] == ["chelsea", "astronaut", "coffee", "rocket"]
        assert data["complement"] == other
        assert not (out / f"{metric}.png").exists()
    sanity = json.loads((out / "sanity.json").read_text())
    assert sanity["cascade"] == ["head:_fc"]
    assert {r["step"] for r in sanity["summary"]} == {0, 1}
    text = capsys.readouterr().out
    assert all(f"## {m}" in text for m in ("deletion", "types", "pointing", "sanity"))
