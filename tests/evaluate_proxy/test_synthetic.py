"""The synthetic part-annotated benchmark (galore.evaluate.synthetic): design and part points checked by hand, the
CUB-200-2011 layout it writes read back by the protocol's own reader, the protocol's ground truth against the
generator's on a 2-class set, and `galore evaluate synthetic --quick` end to end (what `make test` runs)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from galore.errors import InvalidArgument
from galore.classifier_training import ClassifierTraining, load_images, train_classifier, weights_fingerprint
from galore.evaluate.cub import fingerprint, read_cub
from galore.evaluate.synthetic import (GROUPS, PART_NAMES, Pose, SyntheticConfig, design, ground_truth, render,
                                       write_dataset)
from galore.evaluate.synthetic_truth import family_confusion, protocol_agreement
from galore_cli.main import main
from galore_cli.pinned_kernels import kernels_in_use

from .test_pinned_kernels import HAS_AVX2

from ..torchserve_loader import loaded_archive, run_batch

TWO = dict(num_classes=2, family_size=2, changed_types=1)


@pytest.fixture(autouse=True)
def keep_threads():
    """--threads sets torch's thread count for the process: give the rest of the session its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_two_class_family_shares_every_part_it_did_not_change():
    d = design(SyntheticConfig(**TWO, seed=0))
    # seed 0: class 0 changed its tail, class 1 its nape (pinned: the design is deterministic by seed)
    assert d.changed == (("tail",), ("nape",)) and d.families == ((0, 1),)
    # the tables differ in exactly the nape colour (group 15) and the tail's colour, pattern and shape (16-18)
    assert list(np.nonzero(d.table[0] != d.table[1])[0]) == [15, 16, 17, 18]
    assert [GROUPS[g] for g in (15, 16, 17, 18)] == ["has_nape_color", "has_upper_tail_color", "has_tail_pattern",
                                                    "has_tail_shape"]
    truth = ground_truth(d)["tuples"]["0,1"]
    assert truth["differ"] == ["nape", "tail"] and truth["same_family"]
    assert truth["shared"] == [p for p in PART_NAMES if p not in ("nape", "tail")]
    assert design(SyntheticConfig(**TWO, seed=0)).table.tolist() == d.table.tolist()


def test_families_and_triples():
    d = design(SyntheticConfig(num_classes=4, family_size=2, changed_types=1, seed=0))
    assert d.families == ((0, 1), (2, 3)) and d.changed == (("tail",), ("nape",), ("crown",), ("eye",))
    truth = ground_truth(d)["tuples"]
    assert len(truth) == 6 + 4  # C(4, 2) pairs and C(4, 3) triples
    assert truth["2,3"]["differ"] == ["crown", "left eye", "right eye"]  # eyes share one type, as in CUB
    assert not truth["0,2"]["same_family"] and not truth["0,1,2"]["same_family"]
    # a triple shares what all three share: never more than any of its pairs
    assert set(truth["0,1,2"]["shared"]) <= set(truth["0,1"]["shared"]) & set(truth["1,2"]["shared"])


def test_part_points_of_a_pose_by_hand():
    """Facing right, unrotated, scale 1, canonical centre (128, 128) on the 256 px image: every point is its
    canonical one. The eye is the disc of radius 5 about (HEAD x + 7, HEAD y - 3) = (179, 93); its pixel centres
    are symmetric about that point, the nearest of them first in row order is pixel (178, 92), centre
    (178.5, 92.5). Facing right the bird shows its right side: the right eye is seen, the left (far) one never."""
    config = SyntheticConfig(**TWO, size=256, occlusion=0.0, attribute_noise=0.0)
    d = design(config)
    right, left = PART_NAMES.index("right eye"), PART_NAMES.index("left eye")
    s = render(d, 0, config, 1, Pose(True, 0.0, 1.0, (128.0, 128.0)))
    assert s.rgb.shape == (256, 256, 3) and s.rgb.dtype == np.uint8
    assert tuple(s.points[right]) == (178.5, 92.5) and s.visible[right] and not s.visible[left]
    assert s.visible.sum() == 14  # without an occluder every part but the far eye
    mirrored = render(d, 0, config, 1, Pose(False, 0.0, 1.0, (128.0, 128.0)))  # x -> 256 - x, sides swap
    assert tuple(mirrored.points[left]) == (256 - 178.5, 92.5) and not mirrored.visible[right]
    half = render(d, 0, config, 1, Pose(True, 0.0, 0.5, (112.0, 112.0)))  # 0.5 (p - 128) + 112
    assert tuple(half.points[right]) == (0.5 * (178.5 - 128) + 112, 0.5 * (92.5 - 128) + 112)
    # the painted attributes are the class's when there is no attribute noise
    assert s.values.tolist() == d.table[0].tolist()


def test_writes_the_cub_layout_the_protocol_reads(tmp_path):
    config = SyntheticConfig(**TWO, train_per_class=2, test_per_class=1, seed=0)
    write_dataset(config, tmp_path / "a")
    cub = read_cub(tmp_path / "a")
    assert cub.image_ids == (1, 2, 3, 4, 5, 6) and cub.num_classes == 2
    assert [cub.labels[i] for i in cub.image_ids] == [0, 0, 0, 1, 1, 1]
    assert cub.train_ids == (1, 2, 4, 5) and cub.test_ids == (3, 6)
    assert cub.parts == PART_NAMES and cub.class_names == ("001.Synth_F1_1", "002.Synth_F1_2")
    # 12 colour groups x 10 colours + 5 pattern groups x 4 + 3 shape groups x 3 = 149 attributes, one per group
    assert len(cub.attribute_groups) == 149 and (cub.attribute_present.sum(1) == len(GROUPS)).all()
    assert cub.paths[1] == "001.Synth_F1_1/Synth_F1_1_0001.jpg"
    assert tuple(cub.image(1).shape) == (3, 224, 224)
    for i in cub.image_ids:  # visible points lie inside the image
        p = cub.part_points[i]
        assert ((p.xy[p.visible] >= 0) & (p.xy[p.visible] < 224)).all() and p.visible.sum() >= 1
    for name in ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "parts/parts.txt",
                 "parts/part_locs.txt", "attributes.txt", "attributes/image_attribute_labels.txt",
                 "ground_truth.json", "synthetic.json"):
        assert (tmp_path / "a" / name).is_file(), name
    assert (tmp_path / "a/parts/part_locs.txt").read_text().splitlines()[0].split()[:2] == ["1", "1"]
    write_dataset(config, tmp_path / "b")  # the same seed writes the same bytes
    for name in ("parts/part_locs.txt", "attributes/image_attribute_labels.txt", "images/" + cub.paths[4]):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_protocol_cut_against_construction_on_two_classes(tmp_path):
    """Seed 26: class 0 changed its forehead, class 1 its back; without attribute noise every image of a class
    carries its table, so a shared part has similarity exactly 1 and a changed one less. 15 (part, pair)
    triplets, the 20 % cut keeps ceil(3) and its ties at 1: the 13 shared parts, except that the authors' mapping
    describes the crown with the forehead colour too (AUTHORS_PART_GROUPS), so the crown falls out of the cut:
    12 selected, all shared (precision 1), recall 12/13. With this project's earlier mapping the crown is in."""
    config = SyntheticConfig(**TWO, train_per_class=2, test_per_class=1, attribute_noise=0.0, seed=26)
    d = write_dataset(config, tmp_path)
    assert d.changed == (("forehead",), ("back",))
    cub = read_cub(tmp_path)
    a = protocol_agreement(cub, d, dims=(2,))[2]
    assert (a["triplets"], a["shared"], a["selected"], a["both"]) == (15, 13, 12, 12)
    assert a["precision"] == 1.0 and a["recall"] == pytest.approx(12 / 13)
    assert a["parts"]["crown"] == [None, 0.0] and a["parts"]["throat"] == [1.0, 1.0]
    ours = protocol_agreement(cub, d, dims=(2,), part_mapping="ours")[2]
    assert (ours["selected"], ours["both"]) == (13, 13)


def test_family_confusion_by_hand():
    confusion = [[8, 2, 0, 0],
                 [1, 9, 0, 0],
                 [0, 0, 7, 3],
                 [0, 1, 0, 9]]
    # errors 2 + 1 + 3 + 1 = 7, within the family 2 + 1 + 3 = 6; chance: 1 of the 3 other classes
    assert family_confusion(confusion, [[0, 1], [2, 3]]) == {"errors": 7, "within_family": 6 / 7, "chance": 1 / 3}


def test_config_validation_raises():
    with pytest.raises(InvalidArgument, match="family_size"):
        SyntheticConfig(num_classes=5, family_size=2)
    with pytest.raises(InvalidArgument, match="12 part"):
        SyntheticConfig(num_classes=7, family_size=7, changed_types=2)
    with pytest.raises(InvalidArgument, match="224"):
        SyntheticConfig(size=128)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """`galore evaluate synthetic --quick`: 6 classes in 2 families, 300 images, 4 epochs, 12 explained images."""
    out = tmp_path_factory.mktemp("synthetic")
    before = torch.get_num_threads()
    status = main(["evaluate", "synthetic", "--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    torch.set_num_threads(before)
    return out, status


def test_quick_benchmark_end_to_end(quick):
    out, status = quick
    assert status == 0
    cub = read_cub(out / "data")
    assert cub.num_classes == 6 and len(cub.train_ids) == 240 and len(cub.test_ids) == 60
    report = json.loads((out / "synthetic.json").read_text())
    assert report["accuracy"]["images"] == 60
    assert report["accuracy"]["top1"] > 2 / 6  # twice chance after 4 epochs from scratch
    agreement = report["protocol_agreement"]
    assert set(agreement) == {"2", "3"} and agreement["2"]["triplets"] == 15 * 15  # 15 parts x C(6, 2)
    trained = report["proxy"]["trained"]
    assert trained["images"] == 12
    for key in ("attributive/1", "deliberative/2", "counterfactual/1", "counterfactual/2"):
        precision = [p for p in trained["curves"][key]["precision"] if p is not None]
        assert precision and all(0.0 <= p <= 1.0 for p in precision), key
    assert "random" in report["proxy"]
    prior = report["baselines"]["trained"]["object_prior"]["deliberative/2"]["precision"]
    assert "random" in report["baselines"]["random"]
    assert len(prior) == 3 and len(prior[0]) == len(report["coverages"])  # 3 seeds x every level
    cam = report["baselines"]["trained"]["finer_cam"]
    assert set(cam) == {"counterfactual/1", "counterfactual/2"} and len(cam["counterfactual/1"]["precision"]) == 1
    assert report["finer_cam"]["images"] == 12 and report["finer_cam"]["segments"] >= 12
    assert "finer_cam" in report["construction"]["trained"]
    # what another run must match: the data's and the weights' fingerprints, the kernels (pinned to AVX2 on x86)
    assert report["data_sha256"] == fingerprint(cub)
    weights = torch.load(out / "model" / "weights.pt", weights_only=True)
    assert report["weights_sha256"] == weights_fingerprint(weights) and report["threads"] == 1
    expected = {"aten": "avx2", "onednn": "AVX2", "mkl": "COMPATIBLE"} if HAS_AVX2 else kernels_in_use()
    assert report["kernels"] == expected
    assert report["evaluation_kernels"] == expected and report["evaluation_threads"] == 1  # evaluated pinned too
    assert set(report["machine"]["versions"]) == {"torch", "numpy", "pillow"}
    text = (out / "synthetic.md").read_text()
    assert f"data sha256 `{report['data_sha256'][:16]}`" in text
    for title in ("## Data set", "## Classifier", "## The protocol's ground truth against the generator's",
                  "## Proxy protocol, trained model", "Strength vs precision", "random weights (Fig. 11)",
                  "## Explanations against baseline regions of the same size (Table III)",
                  "| deliberative/2 | object prior |", "| counterfactual/1 | random |",
                  "| counterfactual/2 | FinerCAM |", "FinerCAM: "):
        assert title in text, title
    bank = sorted(p.name for p in (out / "model" / "exemplars").iterdir())
    assert bank == list(cub.class_names) and len(list((out / "model/exemplars" / bank[0]).iterdir())) == 5
    assert (out / "model" / "labels.txt").read_text().splitlines() == list(cub.class_names)


def test_quick_outputs_run_unchanged_through_proxy_and_train_hardness_and_are_reused(quick, tmp_path, capsys):
    out, _ = quick
    status = main(["evaluate", "proxy", str(out / "data"), "--arch", "mobilenet_v3_small", "--state-dict",
                   str(out / "model" / "weights.pt"), "--layer", "features.8", "--limit", "2", "--coverages",
                   "0.05,0.1", "--out", str(tmp_path / "proxy"), "--threads", "1", "--no-progress"])
    assert status == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "proxy" / "proxy.json").read_text())
    assert summary["images"] == 2 and summary["model"]["layer"].startswith("features.8")
    status = main(["train-hardness", str(out / "data"), "--layout", "cub", "--arch", "mobilenet_v3_small",
                   "--state-dict", str(out / "model" / "weights.pt"), "--hardness-arch", "mobilenet_v3_small",
                   "--epochs", "1", "--out", str(tmp_path / "hp"), "--threads", "1", "--no-progress"])
    assert status == 0 and (tmp_path / "hp" / "hardness.pt").is_file()
    assert json.loads((tmp_path / "hp" / "report.json").read_text())["held_out"]["images"] == 60
    capsys.readouterr()
    assert main(["evaluate", "synthetic", "train", "--quick", "--out", str(out), "--no-progress"]) == 0
    assert "train reused" in capsys.readouterr().out


def test_training_again_with_pinned_kernels_gives_the_same_weights_and_other_kernels_start_over(quick, tmp_path):
    """The same data, settings and pinned kernels: bit-identical weights (a fresh process, a fresh folder)."""
    out, _ = quick
    shutil.copytree(out / "data", tmp_path / "data")
    assert main(["evaluate", "synthetic", "train", "--quick", "--out", str(tmp_path), "--threads", "1",
                 "--no-progress"]) == 0
    again = json.loads((tmp_path / "model" / "report.json").read_text())
    assert again["weights_sha256"] == json.loads((out / "model" / "report.json").read_text())["weights_sha256"]
    # other kernels: neither reused nor resumed from the pinned run's checkpoint (which would mix two runs)
    assert main(["evaluate", "synthetic", "train", "--quick", "--out", str(tmp_path), "--threads", "1",
                 "--cpu-kernels", "native", "--no-progress"]) == 0
    checkpoint = torch.load(tmp_path / "model" / "checkpoint.pt", weights_only=True)
    assert checkpoint["provenance"] == {"cpu_kernels": "native", "env": {}}
    assert json.loads((tmp_path / "model" / "data.json").read_text())["provenance"]["cpu_kernels"] == "native"
    with pytest.raises(InvalidArgument, match="provenance"):  # the library refuses such a resume itself
        cub = read_cub(tmp_path / "data")
        data = load_images(cub, cub.train_ids[:2], 32)
        train_classifier(data, data, list(cub.class_names), tmp_path / "model",
                         ClassifierTraining(**checkpoint["config"]), resume=True, progress=False,
                         provenance={"cpu_kernels": "pinned"})


def test_seeds_summary_gives_mean_and_sd_over_the_seed_folders(quick, tmp_path, capsys):
    """`galore evaluate synthetic summary --seeds`: the quick run's report as seed 0 and, as seed 1, the same report
    with the held-out top-1, GALORE's deliberative precision at 10 % and its Table II r set by hand."""
    from galore.evaluate.region_baselines import at

    out, _ = quick
    report = json.loads((out / "synthetic.json").read_text())
    other = json.loads(json.dumps(report))
    other["accuracy"]["top1"] = report["accuracy"]["top1"] + 0.2
    covs = report["coverages"]
    curve = other["proxy"]["trained"]["curves"]["deliberative/2"]["precision"]
    curve[covs.index(0.1)] = 1.0
    other["proxy"]["trained"]["strength_precision"]["deliberative/2"]["pearson"] = 0.9
    for seed, r in ((0, report), (1, other)):
        (tmp_path / f"seed-{seed}").mkdir()
        (tmp_path / f"seed-{seed}" / "synthetic.json").write_text(json.dumps(r))
    (tmp_path / "seed-2").mkdir()  # unfinished: no report, ignored
    assert main(["evaluate", "synthetic", "summary", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "seeds.json").read_text())
    assert summary["seeds"] == 2
    top1 = report["accuracy"]["top1"]
    assert summary["accuracy"] == pytest.approx([top1 + 0.1, 0.1], abs=1e-4)
    p = [v for v in (at(covs, report["proxy"]["trained"]["curves"]["deliberative/2"]["precision"], 0.1), 1.0)
         if v is not None]  # seed 0 may have no segment at 10 %
    assert summary["regions"]["deliberative/2"]["GALORE"]["P@10%"] == pytest.approx([np.mean(p), np.std(p)],
                                                                                        abs=1e-4)
    r = report["proxy"]["trained"]["strength_precision"]["deliberative/2"]["pearson"]
    assert summary["pearson"]["deliberative/2"] == pytest.approx([(r + 0.9) / 2, abs(0.9 - r) / 2], abs=1e-4)
    prior = summary["regions"]["deliberative/2"]["object prior"]["P@10%"]
    draws = report["baselines"]["trained"]["object_prior"]["deliberative/2"]["precision"]
    assert prior == pytest.approx([np.mean([at(covs, d, 0.1) for d in draws]), 0.0], abs=1e-4)  # same in both
    text = (tmp_path / "seeds.md").read_text()
    assert "over 2 seeds (seed-0, seed-1)" in text and "| deliberative/2 | object prior |" in text
    assert f"weights sha256 `{report['weights_sha256'][:16]}`" in text
    assert "## PIoU and Table II" in capsys.readouterr().out
    (tmp_path / "native").symlink_to(tmp_path / "seed-1")  # a run of another kind beside the seeds: a run too
    assert main(["evaluate", "synthetic", "summary", "--out", str(tmp_path)]) == 0
    assert "over 3 runs (seed-0, seed-1, native)" in (tmp_path / "seeds.md").read_text()
    assert main(["evaluate", "synthetic", "summary", "--out", str(tmp_path / "none")]) == 2


def test_quick_model_builds_into_an_archive_the_service_serves(quick, tmp_path):
    """model_store.build on the trained weights, F = features.8 and the exemplar bank; TorchServe's own model
    loader then answers a counterfactual on a test image against a bank exemplar (module docstring of
    synthetic_cli)."""
    from galore_api.v1 import explainer_pb2 as pb
    from model_store.build import build_torchvision

    out, _ = quick
    mar = build_torchvision(tmp_path / "store", "mobilenet_v3_small", out / "model" / "weights.pt",
                            out / "model" / "labels.txt", name="synthetic_birds", layer="features.8",
                            exemplar_bank=out / "model" / "exemplars")
    with loaded_archive(mar, tmp_path / "model", "synthetic_birds", 1) as service:
        def call(method: bytes, body: bytes) -> bytes:
            [(_, answer)] = run_batch(service, [({"galore-rpc": method, "body": body}, {})])
            return answer

        info = pb.ModelInfo.FromString(call(b"GetModelInfo", b""))
        assert info.layer.startswith("features.8") and (info.feature_height, info.feature_width) == (14, 14)
        assert dict(info.exemplars_per_class) == {c: 5 for c in range(6)}
        cub = read_cub(out / "data")
        photo = (out / "data" / "images" / cub.paths[cub.test_ids[0]]).read_bytes()
        options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_COUNTERFACTUAL], top_e=3)
        request = pb.ExplainRequest(images=[pb.Image(data=photo)], options=options)
        image = pb.ExplainResponse.FromString(call(b"Explain", request.SerializeToString())).images[0]
        assert image.status.code == "OK" and image.counterfactual.complete
        assert image.counterfactual.exemplars[0].exemplar_key.startswith("bank/001.Synth_F1_1/")
