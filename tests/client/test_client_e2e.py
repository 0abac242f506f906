"""The typed client and the `galore` CLI against the real service (TorchServe + gateway, tests/serving fixture)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from galore.errors import InvalidArgument
from galore_api.v1 import explainer_pb2 as pb
from galore_cli import main as cli
from galore_client.client import GaloreClient, build_request
from galore_client.errors import GaloreClientError
from galore_cli.images import read_image
from galore_client.settings import ExplainSettings
from tests.serving.conftest import CATS, MODEL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def grpc_url(service) -> str:
    return f"grpc://127.0.0.1:{service.config.ports.grpc}"


@pytest.fixture(scope="module")
def http_url(service) -> str:
    return service.config.rest_base


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


SETTINGS = ExplainSettings(dims=(2, 3), counter_classes=(287,), top_e=5, max_insecurities=4, include_heatmaps=True)


@pytest.fixture(scope="module")
def served(grpc_url, chelsea_path):
    image = read_image(chelsea_path)
    with GaloreClient(grpc_url, timeout_s=120) as client:
        summary = client.model_info()
        results = client.explain([image.data], SETTINGS, {287: image.data[:]}, ids=["chelsea"])
    return summary, results


def test_model_info_is_typed(served):
    summary, _ = served
    assert summary.name == MODEL and len(summary.labels) == 1000 and summary.labels[281] == "tabby"
    assert summary.feature_grid == (7, 7) and summary.input_size == 224
    assert "softmax" in summary.scores and "grad_cam" in summary.attributions
    assert summary.class_id("lynx") == 287


def test_grpc_round_trip_gives_typed_results_at_the_original_size(served):
    _, [result] = served
    assert result.ok and (result.width, result.height) == (451, 300)
    assert {c.label for c in result.top_classes[:3]} <= CATS
    # 451x300 -> 384x256, 224 crop at (80, 16): x 80 * 451 / 384 = 93.96 .. 357.05, y 18.75 .. 281.25
    assert result.crop_box == (93, 18, 358, 282)
    for region in [result.attributive.region, result.self_aware.region, result.counterfactual.query]:
        assert region.mask.dtype == bool and region.mask.shape == (300, 451)
        assert region.pixel_count == region.mask.sum() > 0
        assert region.heatmap.dtype == np.float32 and region.heatmap.shape == (7, 7)
        x0, y0, x1, y1 = region.bbox
        assert region.mask[y0:y1, x0:x1].sum() == region.pixel_count  # the box holds every pixel
    assert sorted(result.deliberative) == [2, 3]
    assert [len(ins.classes) for ins in result.deliberative[2]] == [2] * 4
    assert [len(ins.classes) for ins in result.deliberative[3]] == [3] * 4
    strengths = [ins.strength for ins in result.insecurities]
    assert strengths == sorted(strengths, reverse=True) and len(strengths) == 8
    top5 = {c.class_id for c in result.top_classes}
    for ins in result.insecurities:
        assert {c.class_id for c in ins.classes} <= top5
        assert all(c.label == next(t.label for t in result.top_classes if t.class_id == c.class_id)
                   for c in ins.classes)
    cf = result.counterfactual
    assert [c.label for c in cf.counter] == ["lynx"] and cf.complete
    assert cf.exemplars[0].region.mask.shape == (300, 451) and cf.strength > 0


def test_served_masks_match_the_in_process_engine(served, local_backend, chelsea_path):
    _, [remote] = served
    image = read_image(chelsea_path)
    [local] = local_backend.explain([image], SETTINGS, {287: image})
    assert [c.class_id for c in remote.top_classes] == [c.class_id for c in local.top_classes]
    assert [ins.labels for ins in remote.insecurities] == [ins.labels for ins in local.insecurities]
    for a, b in [(remote.attributive.region, local.attributive.region),
                 (remote.counterfactual.query, local.counterfactual.query)] + \
            list(zip([i.region for i in remote.insecurities], [i.region for i in local.insecurities])):
        assert iou(a.mask, b.mask) > 0.95


def test_rest_gives_the_same_typed_results_as_grpc(served, http_url, chelsea_path):
    _, [via_grpc] = served
    image = read_image(chelsea_path)
    with GaloreClient(http_url, model=MODEL, timeout_s=120) as client:
        [via_rest] = client.explain([image.data], SETTINGS, {287: image.data})
        assert client.model_info() == served[0]  # model info over REST is the gateway's
    assert [c.label for c in via_rest.top_classes] == [c.label for c in via_grpc.top_classes]
    assert via_rest.crop_box == via_grpc.crop_box
    assert [ins.labels for ins in via_rest.insecurities] == [ins.labels for ins in via_grpc.insecurities]
    assert iou(via_rest.attributive.region.mask, via_grpc.attributive.region.mask) > 0.95


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_request_errors_raise_one_exception_type_with_code_and_server_message(transport, grpc_url, http_url,
                                                                                chelsea_path):
    data = read_image(chelsea_path).data
    with GaloreClient(grpc_url if transport == "grpc" else http_url, timeout_s=120) as client:
        with pytest.raises(InvalidArgument, match=r"options.dims\[0\]: V=4 exceeds top_e"):  # checked before sending
            ExplainSettings(kinds=("deliberative",), top_e=3, dims=(4,))
        options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_DELIBERATIVE], top_e=3, dims=[4])
        with pytest.raises(GaloreClientError) as info:  # the service checks it too
            client.explain_request(build_request([data], options))
        assert info.value.code == "INVALID_ARGUMENT" and info.value.field.startswith("options.dims")
        assert "top_e" in info.value.message
        if transport == "http":
            assert info.value.http_status == 400
        with pytest.raises(GaloreClientError) as info:
            client.explain([data], ExplainSettings(counter_classes=("no such class",)))
        assert info.value.code == "INVALID_ARGUMENT" and "no such class" in info.value.message


def test_a_bad_image_fails_alone(grpc_url, chelsea_path):
    data = read_image(chelsea_path).data
    with GaloreClient(grpc_url, timeout_s=120) as client:
        broken, good = client.explain([b"not an image", data], ExplainSettings(prediction_only=True))
    assert not broken.ok and broken.error.code in ("INVALID_ARGUMENT", "UNSUPPORTED_MEDIA_TYPE")
    assert broken.error.message and good.ok and {c.label for c in good.top_classes[:3]} <= CATS


def test_cli_against_the_server_prints_and_writes_the_report(capsys, grpc_url, chelsea_path, tmp_path):
    out_dir = tmp_path / "report"
    status = cli.main(["explain", str(chelsea_path), "--server", grpc_url, "--dim", "2", "--counter", "lynx",
                       "--exemplar", str(chelsea_path), "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert status == cli.EXIT_OK, err
    assert out.startswith(f"{chelsea_path} (451x300)\n  predicted") and "and not lynx? strength" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "chelsea_attributive.png", "chelsea_counterfactual.png", "chelsea_deliberative.png", "report.html"]


def test_cli_unknown_class_against_the_server(capsys, grpc_url, http_url, chelsea_path):
    status = cli.main(["explain", str(chelsea_path), "--server", grpc_url, "--counter", "tigre cat", "--no-report"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_BAD_INPUT and "--counter: unknown class 'tigre cat'" in err and "'tiger cat'" in err
    status = cli.main(["explain", str(chelsea_path), "--server", http_url, "--counter", "tigre cat", "--no-report"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_BAD_INPUT and "--counter: unknown class 'tigre cat'" in err and "'tiger cat'" in err


def test_cli_models_against_the_server(capsys, grpc_url):
    assert cli.main(["models", "--server", grpc_url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == MODEL and data["num_classes"] == 1000 and data["max_images_per_request"] > 0


def test_the_readme_python_example_runs(grpc_url, monkeypatch):
    """The README's client example, pointed at this deployment, prints what its comment says."""
    import contextlib
    import io
    import re

    from tests.serving.conftest import REPO

    section = (REPO / "README.md").read_text().split("## Command line and reports", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(REPO)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(code.replace("grpc://127.0.0.1:50051", grpc_url), {})  # noqa: S102 - our own README
    assert re.fullmatch(r"\('[a-zA-Z ]+', '[a-zA-Z ]+'\) [0-9.e-]+ \(300, 451\)\n", printed.getvalue())


def test_the_readme_command_prints_what_the_readme_shows(capsys, grpc_url, tmp_path, monkeypatch):
    import re

    from tests.serving.conftest import REPO

    section = (REPO / "README.md").read_text().split("## Command line and reports", 1)[1].split("\n## ", 1)[0]
    command = re.search(r"\.venv/bin/galore (explain .*?) --out galore-report\n", section).group(1).split()
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()
    monkeypatch.chdir(REPO)
    assert cli.main(command + ["--server", grpc_url, "--out", str(tmp_path)]) == cli.EXIT_OK
    printed = capsys.readouterr().out.splitlines()
    assert printed[:7] == shown[:7]  # image, top-5 classes, s(x): the model's forward pass
    # the explanation lines: same kinds in the same order (their numbers follow the engine's current defaults)
    assert [line.split()[0] for line in printed[7:-1]] == [line.split()[0] for line in shown[7:-1]]
    assert printed[-1] == f"report: {tmp_path}/report.html"
