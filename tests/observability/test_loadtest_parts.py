"""Load tester pieces that need no server: settings validation, loopback guard, statistics, Table III report."""
from __future__ import annotations

import argparse

import pytest

from galore.options import ExplainOptions
from galore_cli import loadtest
from galore_cli.load_report import format_report, percentile, summarize, table_iii_arch, table_iii_rows
from galore_cli.load_transports import (LoadTestError, build_request, check_loopback, folder_images, read_counters,
                                          split_target)
from galore_client.settings import ExplainSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    loadtest.add_loadtest_parser(subparsers)
    return parser.parse_args(["loadtest", *argv])


def test_subcommand_parser_defaults_to_grpc_on_the_gateway_port():
    args = parse()
    assert args.func is loadtest.run_loadtest
    config = loadtest.config_from_args(args)
    assert (config.transport, config.target, config.concurrency, config.count, config.rate) == \
        ("grpc", "127.0.0.1:50051", 4, 100, None)
    assert config.kinds == ("attributive", "self_aware", "deliberative", "counterfactual")
    assert config.settings == ExplainSettings() and config.settings.options == ExplainOptions()  # engine defaults
    rest = loadtest.config_from_args(parse("--transport", "rest", "--kinds", "prediction"))
    assert (rest.target, rest.kinds) == ("127.0.0.1:8080", ())


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.7", "localhost", "::1"])
def test_loopback_targets_are_accepted(host):
    check_loopback(host, allow_remote=False)


@pytest.mark.parametrize("host", ["10.1.2.3", "8.8.8.8", "2001:db8::1"])
def test_non_loopback_targets_are_refused_unless_allowed(host):
    with pytest.raises(LoadTestError, match="--target: .*non-loopback.*--allow-remote"):
        check_loopback(host, allow_remote=False)
    check_loopback(host, allow_remote=True)


def test_run_refuses_a_remote_target_before_sending_anything(capsys):
    assert loadtest.run_loadtest(parse("--target", "10.1.2.3:50051")) == 2
    assert "--target" in capsys.readouterr().err


@pytest.mark.parametrize("argv, option", [
    (("--concurrency", "0"), "--concurrency"), (("--count", "0"), "--count"), (("--rate", "0"), "--rate"),
    (("--duration", "-1"), "--duration"), (("--target", "127.0.0.1"), "--target"),
    (("--target", "127.0.0.1:99999"), "--target"), (("--top-e", "0"), "--top-e"), (("--dims", "6"), "--dims"),
    (("--ig-steps", "5000"), "--ig-steps"), (("--coverage", "1.5"), "--coverage"),
])
def test_bad_settings_name_the_option(argv, option):
    with pytest.raises(LoadTestError, match=f"^{option}:"):
        loadtest.config_from_args(parse(*argv))


@pytest.mark.parametrize("argv, option", [(("--kinds", "attributive,bogus"), "--kinds"), (("--dims", "2,x"), "--dims")])
def test_unparsable_options_are_refused_by_the_parser_naming_the_option(argv, option, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2 and f"argument {option}" in capsys.readouterr().err


def test_split_target_handles_ipv6_brackets():
    assert split_target("[::1]:50051") == ("::1", 50051)
    assert split_target("localhost:8080") == ("localhost", 8080)


def test_images_folder_reads_image_files_in_name_order(tmp_path):
    (tmp_path / "b.png").write_bytes(b"second")
    (tmp_path / "a.JPG").write_bytes(b"first")
    (tmp_path / "notes.txt").write_text("ignored")
    assert folder_images(str(tmp_path)) == [b"first", b"second"]
    with pytest.raises(LoadTestError, match="--images: .* is not a directory"):
        folder_images(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadTestError, match="--images: no .jpg"):
        folder_images(str(tmp_path / "empty"))


def test_request_carries_the_kinds_and_prediction_only_when_no_kind():
    settings = loadtest.config_from_args(parse("--kinds", "deliberative,counterfactual", "--dims", "2,3")).settings
    request = build_request([b"x", b"y"], settings)
    assert [image.data for image in request.images] == [b"x", b"y"]
    assert list(request.options.kinds) == [3, 4] and list(request.options.dims) == [2, 3]
    assert not request.options.prediction_only
    assert build_request([b"x"], ExplainSettings(prediction_only=True)).options.prediction_only


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 101)]  # 1 .. 100
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99), percentile(values, 100)) == \
        (50.0, 95.0, 99.0, 100.0)
    assert percentile([0.3], 99) == 0.3 and percentile([], 50) == 0.0


def test_summary_counts_ok_images_over_elapsed_time():
    summary = summarize([0.4, 0.1, 0.3, 0.2], ok_images=6, elapsed_s=1.5, requests=4, errors={"UNAVAILABLE": 1})
    assert summary.images_per_second == 4.0
    assert (summary.p50_s, summary.p95_s, summary.mean_s) == (0.2, 0.4, 0.25)
    assert summary.errors == {"UNAVAILABLE": 1}


def test_table_iii_rows_follow_the_paper():
    assert table_iii_arch("resnet50") == "ResNet-50" and table_iii_arch("vgg16") == "VGG16"
    assert table_iii_arch("efficientnet_lite0") is None
    assert table_iii_rows(["counterfactual"], "ResNet-50") == [
        ("GALORE", "ResNet-50", "counterfactual", "78.54 (11.87)"),
        ("Goyal et al. [30]", "ResNet-50", "counterfactual", "1.13 (0.07)")]
    assert table_iii_rows(["deliberative"], "VGG16") == [
        ("GALORE", "VGG16", "deliberative", "3.78 (0.31)"), ("Baseline", "VGG16", "deliberative", "<0.01")]
    assert len(table_iii_rows(["counterfactual", "deliberative"], None)) == 8  # unknown arch: both archs
    assert table_iii_rows(["attributive"], "VGG16") == []


def test_report_puts_this_run_beside_the_paper_rows():
    summary = summarize([0.5], ok_images=3, elapsed_s=2.0, requests=1, errors={})
    text = format_report(summary, ["deliberative"], "vgg16", "galore-serve grpc, concurrency 2")
    lines = text.splitlines()
    assert "1.50 images/s" in lines[1] and "errors        none" in text
    paper = [line for line in lines if line.startswith("paper")]
    assert len(paper) == 2 and "3.78 (0.31)" in paper[0] and "<0.01" in paper[1]
    assert "ResNet-50" not in text
    ours = lines[-1].split()
    assert ours[:2] == ["this", "run"] and ours[-3:] == ["VGG16", "deliberative", "1.50"]


def test_counter_classes_pair_with_exemplar_files_by_position(tmp_path):
    exemplar = tmp_path / "tabby.jpg"
    exemplar.write_bytes(b"jpeg bytes")
    args = parse("--kinds", "counterfactual", "--counter-classes", "tabby, 285", "--exemplars", str(exemplar))
    config = loadtest.config_from_args(args)
    counters = read_counters(config.settings.counter_classes, config.exemplars)
    assert counters == {"tabby": b"jpeg bytes"}
    request = build_request([b"x"], config.settings, counters)
    first, second = request.options.counter_classes
    assert (first.label, first.exemplar, second.class_id, second.exemplar) == ("tabby", b"jpeg bytes", 285, b"")
    with pytest.raises(LoadTestError, match="^--exemplars: 2 files for 1"):
        read_counters(("tabby",), (str(exemplar), str(exemplar)))
    with pytest.raises(LoadTestError, match="^--exemplars: .* is not a file"):
        read_counters(("tabby",), (str(tmp_path / "missing.jpg"),))
