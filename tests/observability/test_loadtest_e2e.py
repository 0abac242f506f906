"""The load tester, briefly, against the real gateway and TorchServe."""
from __future__ import annotations

import json

from galore_cli import loadtest
from galore_cli.load_transports import sample_images
from galore_wire.status import STATUS_TABLE

from galore_supervisor.deployment import free_ports


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    status = loadtest.main([*argv, "--no-progress"])
    return status, capsys.readouterr().out


def test_grpc_closed_loop_reports_throughput_latency_and_table_iii(service, capsys, tmp_path):
    out_json = tmp_path / "grpc.json"
    status, out = run_cli(capsys, "--target", f"127.0.0.1:{service.config.ports.grpc}", "--concurrency", "2",
                          "--count", "4", "--images-per-request", "2", "--kinds", "counterfactual",
                          "--arch", "resnet50", "--json", str(out_json))
    assert status == 0, out
    result = json.loads(out_json.read_text())
    summary = result["summary"]
    assert (summary["requests"], summary["ok_images"], summary["errors"]) == (4, 8, {})
    assert summary["images_per_second"] == summary["ok_images"] / summary["elapsed_s"]
    assert 0 < summary["p50_s"] <= summary["p95_s"] <= summary["p99_s"] <= summary["elapsed_s"]
    assert result["config"]["transport"] == "grpc" and result["architecture"] == "resnet50"
    assert f"{summary['images_per_second']:.2f} images/s" in out
    # Table III: the paper's ResNet-50 counterfactual rows, then this run's figure in the same columns
    rows = [line.split() for line in out.splitlines() if line.startswith(("paper", "this run"))]
    assert [row[-2:] for row in rows[:2]] == [["78.54", "(11.87)"], ["1.13", "(0.07)"]]
    assert rows[2][-3:] == ["ResNet-50", "counterfactual", f"{summary['images_per_second']:.2f}"]


def test_grpc_asks_the_server_for_its_architecture(service, capsys):
    status, out = run_cli(capsys, "--target", f"127.0.0.1:{service.config.ports.grpc}", "--count", "1",
                          "--kinds", "deliberative")
    assert status == 0, out
    assert "no row for architecture 'efficientnet_lite0'" in out
    assert out.splitlines()[-1].split()[-3:-1] == ["efficientnet_lite0", "deliberative"]


def test_rest_fixed_rate_sends_proto3_json_to_torchserve(service, capsys, tmp_path):
    out_json = tmp_path / "rest.json"
    status, out = run_cli(capsys, "--transport", "rest", "--target", f"127.0.0.1:{service.config.ports.rest}",
                          "--rate", "4", "--count", "3", "--kinds", "prediction", "--json", str(out_json))
    assert status == 0, out
    summary = json.loads(out_json.read_text())["summary"]
    assert (summary["requests"], summary["ok_images"], summary["errors"]) == (3, 3, {})
    # three arrivals due at 0, 0.25 and 0.5 s: the run cannot end before the last one was due
    assert summary["elapsed_s"] >= 0.5
    assert "prediction only" in out


def test_duration_bounds_a_run_that_count_would_not(service, capsys, tmp_path):
    out_json = tmp_path / "bounded.json"
    status, out = run_cli(capsys, "--target", f"127.0.0.1:{service.config.ports.grpc}", "--count", "100000",
                          "--duration", "2", "--kinds", "prediction", "--concurrency", "1", "--json", str(out_json))
    assert status == 0, out
    summary = json.loads(out_json.read_text())["summary"]
    assert 1 <= summary["requests"] < 100000 and summary["ok_images"] == summary["requests"]


def test_image_errors_are_counted_by_code_without_failing_the_other_images(service, capsys, tmp_path):
    (tmp_path / "a_good.jpg").write_bytes(sample_images()[0])
    (tmp_path / "b_broken.jpg").write_bytes(b"this is not an image")
    status, out = run_cli(capsys, "--target", f"127.0.0.1:{service.config.ports.grpc}", "--images", str(tmp_path),
                          "--images-per-request", "2", "--count", "2", "--kinds", "prediction",
                          "--json", str(tmp_path / "errors.json"))
    assert status == 1
    summary = json.loads((tmp_path / "errors.json").read_text())["summary"]
    assert summary["ok_images"] == 2  # the good image of each request
    assert sum(summary["errors"].values()) == 2 and set(summary["errors"]) <= set(STATUS_TABLE), summary["errors"]
    assert "errors        " + ", ".join(f"{c}: {n}" for c, n in summary["errors"].items()) in out


def test_transport_failures_are_counted_by_code(service, capsys):
    (closed_port,) = free_ports(1)
    status, out = run_cli(capsys, "--target", f"127.0.0.1:{closed_port}", "--count", "3", "--timeout", "5")
    assert status == 1
    assert "errors        UNAVAILABLE: 3" in out
    status, out = run_cli(capsys, "--transport", "rest", "--target", f"127.0.0.1:{service.config.ports.rest}",
                          "--model", "no_such_model", "--count", "2", "--kinds", "prediction")
    assert status == 1
    assert "errors        HTTP_404: 2" in out
