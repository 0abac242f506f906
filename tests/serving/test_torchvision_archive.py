"""A generic torchvision archive (state dict + labels + hardness predictor + exemplar bank), built by the real
build script and loaded by TorchServe's own Python model loader, the way a worker loads it."""
from __future__ import annotations

import zipfile

import pytest
import torch
import torchvision
from skimage import data

from galore.precision import bf16_supported
from galore_api.v1 import explainer_pb2 as pb
from model_store.build import BuildError, build_torchvision

from ..torchserve_loader import loaded_archive, run_batch
from .conftest import encode

LABELS = ["apple", "banana", "cherry"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tv")
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), folder / "w.pt")
    torch.save(torchvision.models.resnet18(num_classes=1).state_dict(), folder / "h.pt")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    for label, name, photo in (("banana", "one", data.coffee()), ("banana", "two", data.rocket()),
                                ("cherry", "one", data.astronaut())):
        (folder / "bank" / label).mkdir(parents=True, exist_ok=True)
        (folder / "bank" / label / f"{name}.jpg").write_bytes(encode(photo))
    mar = build_torchvision(folder / "out", "resnet18", folder / "w.pt", folder / "labels.txt", name="fruit",
                            hardness_arch="resnet18", hardness_state_dict=folder / "h.pt",
                            exemplar_bank=folder / "bank", precision="auto", batch_size=4)
    return folder, mar


@pytest.fixture(scope="module")
def worker(archive):
    """TorchServe's Python model loader on the extracted archive (what model_service_worker does)."""
    folder, mar = archive
    with loaded_archive(mar, folder / "model", "fruit", 4) as service:
        yield service


run = run_batch


def explain(service, request: pb.ExplainRequest) -> pb.ExplainResponse:
    [(status, body)] = run(service, [({"galore-rpc": b"Explain", "body": request.SerializeToString()}, {})])
    return pb.ExplainResponse.FromString(body)


def test_archive_carries_weights_labels_bank_and_batching(archive):
    _, mar = archive
    with zipfile.ZipFile(mar) as zipped:
        names = set(zipped.namelist())
        config = zipped.read("model-config.yaml").decode()
    assert {"weights.pt", "hardness.pt", "labels.txt", "exemplars/banana/one.jpg", "exemplars/banana/two.jpg",
            "exemplars/cherry/one.jpg",
            "galore_handler.py", "handlers/galore_handler.py", "galore_service/service.py", "galore_wire/contract.py",
            "galore_api/v1/explainer_pb2.py"} <= names
    assert "batchSize: 4" in config and "maxBatchDelay: 20" in config and "exemplar_bank: exemplars" in config
    assert "precision: auto" in config


def test_model_info_of_the_torchvision_archive(worker):
    [(status, body)] = run(worker, [({"galore-rpc": b"GetModelInfo", "body": b""}, {})])
    info = pb.ModelInfo.FromString(body)
    assert status == 200 and info.name == "fruit" and info.architecture == "resnet18"
    assert [c.label for c in info.classes] == LABELS
    assert list(info.exemplar_class_ids) == [1, 2] and info.has_hardness_predictor
    assert dict(info.exemplars_per_class) == {1: 2, 2: 1}  # the bank keeps every image of a class
    assert pb.CONFIDENCE_SCORE_EASINESS in info.scores and info.max_batch_size == 4
    # built with --precision auto: the worker serves what this CPU supports (head and gradients stay fp32)
    served = pb.BACKBONE_PRECISION_BF16 if bf16_supported(torch.device("cpu")) else pb.BACKBONE_PRECISION_FP32
    assert info.precision == served


def test_bank_exemplar_and_easiness(worker):
    photo = encode(data.chelsea())
    first = explain(worker, pb.ExplainRequest(images=[pb.Image(data=photo)],
                                              options=pb.ExplainOptions(prediction_only=True, top_k=3)))
    predicted = first.images[0].top_classes[0].class_id
    counter = 2 if predicted == 1 else 1
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_COUNTERFACTUAL], score=pb.CONFIDENCE_SCORE_EASINESS,
                                top_e=3, counter_classes=[pb.CounterClass(class_id=counter)])
    image = explain(worker, pb.ExplainRequest(images=[pb.Image(data=photo)], options=options)).images[0]
    assert image.status.code == "OK" and image.score_kind == pb.CONFIDENCE_SCORE_EASINESS
    assert 0.0 <= image.score <= 1.0
    side = image.counterfactual.exemplars[0]
    bank = {"bank/banana/one.jpg": data.coffee(), "bank/banana/two.jpg": data.rocket(),
            "bank/cherry/one.jpg": data.astronaut()}
    assert side.exemplar_key.startswith(f"bank/{LABELS[counter]}/") and image.counterfactual.complete
    assert (side.region.mask.height, side.region.mask.width) == bank[side.exemplar_key].shape[:2]
    counters = [c for c in (1, 2) if c != predicted]
    for policy in (pb.EXEMPLAR_POLICY_RANDOM, pb.EXEMPLAR_POLICY_MOST_CONFIDENT):  # each: the same exemplar again
        if 1 not in counters:
            break  # banana (two bank images) is the prediction itself here
        options.exemplar_policy = policy
        options.counter_classes[0].class_id = 1
        keys = {explain(worker, pb.ExplainRequest(images=[pb.Image(data=photo)], options=options)).images[0]
                .counterfactual.exemplars[0].exemplar_key for _ in range(2)}
        assert len(keys) == 1 and keys <= {"bank/banana/one.jpg", "bank/banana/two.jpg"}


def test_batch_of_mixed_formats_gets_one_answer_each(worker):
    photo = encode(data.chelsea())
    answers = run(worker, [
        ({"body": photo}, {"Content-Type": "image/jpeg"}),
        ({"body": b"nope"}, {"Content-Type": "text/plain"}),
        ({"body": b'{"images": [{"data": "AAAA"}]}'}, {"Content-Type": "application/json"}),
    ])
    assert [status for status, _ in answers] == [200, 415, 400]


def test_build_rejects_bad_inputs(archive, tmp_path):
    folder, _ = archive
    (tmp_path / "bad.pt").write_bytes(b"not a state dict")
    with pytest.raises(BuildError, match="--state-dict"):
        build_torchvision(tmp_path, "resnet18", tmp_path / "bad.pt", folder / "labels.txt")
    with pytest.raises(BuildError, match="--arch"):
        build_torchvision(tmp_path, "resnet9000", folder / "w.pt", folder / "labels.txt")
    (tmp_path / "bank" / "durian").mkdir(parents=True)
    with pytest.raises(BuildError, match="durian"):
        build_torchvision(tmp_path, "resnet18", folder / "w.pt", folder / "labels.txt",
                          exemplar_bank=tmp_path / "bank")


def test_build_fails_where_a_worker_would_fail_to_load(archive, tmp_path):
    """The build loads the staged archive with the worker's own code: what would have failed the deployment fails
    the build, naming what is wrong."""
    folder, _ = archive
    (tmp_path / "four.txt").write_text("apple\nbanana\ncherry\ndurian\n")
    torch.save(torchvision.models.resnet34(num_classes=3).state_dict(), tmp_path / "r34.pt")
    (tmp_path / "bank" / "banana").mkdir(parents=True)
    (tmp_path / "bank" / "banana" / "x.jpg").write_bytes(b"not a jpeg at all")
    for kwargs, says in (({"state_dict": tmp_path / "r34.pt"}, "state_dict: does not fit resnet18 with 3 classes"),
                         ({"labels": tmp_path / "four.txt"}, "state_dict: does not fit resnet18 with 4 classes"),
                         ({"layer": "layer9"}, "layer: no node or module named 'layer9'"),
                         ({"exemplar_bank": tmp_path / "bank"}, "bank/banana/x.jpg: cannot decode image")):
        arguments = {"state_dict": folder / "w.pt", "labels": folder / "labels.txt"} | kwargs
        with pytest.raises(BuildError, match="would not load in a worker") as caught:
            build_torchvision(tmp_path / "out", "resnet18", **arguments)
        assert says in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("arch", ["regnet_y_400mf", "swin_t"])
def test_an_architecture_beyond_the_papers_builds_and_explains_every_kind(arch, archive, tmp_path):
    """zoo.TORCHVISION_ARCHS takes every torchvision classifier with a spatial feature map: an archive of a RegNet
    (squeeze-excitation, grouped convolutions) and of a Swin transformer (F is its last stage, permuted back to
    (C, h, w)) is built by the real script and explains every kind in TorchServe's own loader. A ViT has no such map
    and is refused at build."""
    folder, _ = archive
    torch.manual_seed(0)
    torch.save(torchvision.models.get_model(arch, num_classes=3).state_dict(), tmp_path / "w.pt")
    mar = build_torchvision(tmp_path / "out", arch, tmp_path / "w.pt", folder / "labels.txt", name="wide")
    with loaded_archive(mar, tmp_path / "model", "wide", 2) as service:
        photo = encode(data.chelsea())
        predicted = explain(service, pb.ExplainRequest(images=[pb.Image(data=photo)], options=pb.ExplainOptions(
            prediction_only=True))).images[0].top_classes[0].class_id
        options = pb.ExplainOptions(kinds=list(pb.ExplanationKind.values())[1:], top_e=3, dims=[2, 3],
                                    counter_classes=[pb.CounterClass(class_id=(predicted + 1) % 3)])
        image = explain(service, pb.ExplainRequest(images=[pb.Image(data=photo)], options=options)).images[0]
    assert image.status.code == "OK", image.status.message
    assert image.attributive.region.mask.pixel_count > 0 and image.self_aware.region.mask.height == 300
    assert image.counterfactual.query.mask.width == 451
    with pytest.raises(BuildError, match="--arch"):
        build_torchvision(tmp_path, "vit_b_16", folder / "w.pt", folder / "labels.txt")
