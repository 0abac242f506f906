"""`galore` exit codes and messages on bad input, and a real local run that writes the report."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from galore_cli import main as cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sub_commands(parser) -> dict:
    return next(a.choices for a in parser._actions if a.choices and a.dest in ("command", "metric"))


def test_help_names_every_sub_command():
    parser = cli.build_parser()
    commands = sub_commands(parser)
    assert {"explain", "models", "loadtest", "evaluate", "train-hardness"} <= set(commands)
    usage = [line.split() for line in parser.description.splitlines() if line.strip().startswith("galore ")]
    named = {words[1] for words in usage}
    assert set(commands) == named, f"galore --help names {sorted(named)}, the parser has {sorted(commands)}"
    metrics = {m for words in usage if words[1] == "evaluate" for m in words[2].split("|")}
    assert set(sub_commands(commands["evaluate"])) == metrics


def test_missing_image_is_bad_input(capsys, tmp_path):
    status, out, err = run(capsys, "explain", str(tmp_path / "nope.jpg"), "--local")
    assert status == cli.EXIT_BAD_INPUT and out == ""
    assert err.strip() == f"galore explain: error: {tmp_path / 'nope.jpg'}: no such file"


def test_a_file_that_is_not_an_image_fails_alone(capsys, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    status, out, err = run(capsys, "explain", str(text), "--local", "--out", str(tmp_path / "out"))
    assert status == cli.EXIT_IMAGE_FAILED and "1 of 1 images failed" in err
    assert out.splitlines()[0] == (f"{text}: FAILED INVALID_ARGUMENT: image: not a readable image "
                                   "(unknown or corrupt format)")


def test_a_folder_without_images_is_bad_input(capsys, tmp_path):
    status, _, err = run(capsys, "explain", str(tmp_path), "--local")
    assert status == cli.EXIT_BAD_INPUT and "folder has no images" in err


def test_missing_exemplar_is_bad_input(capsys, chelsea_path, tmp_path):
    status, _, err = run(capsys, "explain", str(chelsea_path), "--counter", "lynx", "--exemplar",
                         str(tmp_path / "lynx.jpg"), "--local")
    assert status == cli.EXIT_BAD_INPUT and "lynx.jpg: no such file" in err


def test_unknown_counter_class_names_the_option_and_suggests_labels(capsys, chelsea_path, local_backend,
                                                                    monkeypatch):
    monkeypatch.setattr(cli, "open_backend", lambda args: local_backend)  # the real engine, loaded once
    status, out, err = run(capsys, "explain", str(chelsea_path), "--counter", "taby", "--local")
    assert status == cli.EXIT_BAD_INPUT and out == ""
    assert "--counter: unknown class 'taby' (the model has 1000 classes, ids 0..999); did you mean 'tabby'" in err
    status, _, err = run(capsys, "explain", str(chelsea_path), "--counter", "1000", "--local")
    assert status == cli.EXIT_BAD_INPUT and "--counter: unknown class '1000'" in err


def test_one_exemplar_per_counter_class(capsys, chelsea_path, local_backend, monkeypatch):
    monkeypatch.setattr(cli, "open_backend", lambda args: local_backend)
    status, _, err = run(capsys, "explain", str(chelsea_path), "--counter", "lynx", "--counter", "tabby",
                         "--exemplar", str(chelsea_path), "--local")
    assert status == cli.EXIT_BAD_INPUT
    assert "--exemplar: give one exemplar per --counter (2 counter classes, 1 exemplars)" in err


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_server_down_is_unavailable_with_a_hint(capsys, chelsea_path, scheme, tmp_path):
    server = f"{scheme}://127.0.0.1:{closed_port()}"
    status, out, err = run(capsys, "explain", str(chelsea_path), "--server", server, "--retries", "0",
                           "--out", str(tmp_path / "out"))
    assert status == cli.EXIT_UNAVAILABLE and out == ""
    assert err.startswith("galore explain: error: ") and "UNAVAILABLE" in err
    assert "is the server running? `make serve` starts it" in err
    assert not (tmp_path / "out").exists()


def test_models_on_a_down_server_is_unavailable(capsys):
    status, _, err = run(capsys, "models", "--server", f"grpc://127.0.0.1:{closed_port()}", "--retries", "0")
    assert status == cli.EXIT_UNAVAILABLE and "GetModelInfo failed: UNAVAILABLE" in err


@pytest.mark.parametrize("server,message", [
    ("ftp://127.0.0.1:1", "--server: unknown scheme 'ftp'"),
    ("grpc://127.0.0.1", "--server: expected grpc://HOST:PORT, got 'grpc://127.0.0.1'"),
])
def test_malformed_server_url_is_bad_input(capsys, chelsea_path, server, message):
    status, _, err = run(capsys, "explain", str(chelsea_path), "--server", server)
    assert status == cli.EXIT_BAD_INPUT and message in err


def test_bad_option_values_are_bad_input(capsys, chelsea_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["explain", str(chelsea_path), "--kinds", "everything"])
    assert exit_info.value.code == 2 and "--kinds: invalid choice: 'everything'" in capsys.readouterr().err
    status, _, err = run(capsys, "explain", str(chelsea_path), "--top-e", "0", "--local")
    assert status == cli.EXIT_BAD_INPUT and "--top-e: must be >= 1, got 0" in err


def test_local_explain_prints_the_summary_and_writes_the_report(capsys, chelsea_path, local_backend, monkeypatch,
                                                                tmp_path):
    monkeypatch.setattr(cli, "open_backend", lambda args: local_backend)
    wide = tmp_path / "wide.png"  # not an image: fails alone, the other image is still explained
    wide.write_bytes(b"\x89PNG but truncated")
    out_dir = tmp_path / "report"
    status, out, err = run(capsys, "explain", str(chelsea_path), str(wide), "--local", "--dim", "2", "--dim", "3",
                           "--counter", "lynx", "--exemplar", str(chelsea_path), "--out", str(out_dir))
    assert status == cli.EXIT_IMAGE_FAILED and "1 of 2 images failed" in err
    assert f"{wide}: FAILED INVALID_ARGUMENT: image: not a readable image" in out
    summary = out.split(f"{wide}: FAILED")[0]
    assert summary.startswith(f"{chelsea_path} (451x300)\n  predicted")
    predicted = summary.splitlines()[1].split("]")[0]
    assert any(cat in predicted for cat in ("tabby", "tiger cat", "Egyptian cat"))
    ranked = [line for line in summary.splitlines() if line.startswith("    ") and ". " in line]
    strengths = [float(line.split("strength ")[1].split(",")[0]) for line in ranked]
    assert len(ranked) == 10 and strengths == sorted(strengths, reverse=True)
    assert "counterfactual: why" in summary and "and not lynx? strength" in summary
    assert f"report: {out_dir / 'report.html'}" in out
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "chelsea_attributive.png", "chelsea_counterfactual.png", "chelsea_deliberative.png", "report.html"]
    page = (out_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "wide.png: FAILED" in page


def test_json_output_is_machine_readable(capsys, chelsea_path, local_backend, monkeypatch):
    monkeypatch.setattr(cli, "open_backend", lambda args: local_backend)
    status, out, _ = run(capsys, "explain", str(chelsea_path), "--local", "--json", "--no-report",
                         "--kinds", "deliberative", "--kinds", "self_aware,deliberative", "--top-e", "3",
                         "--dim", "3", "--top-k", "3")
    assert status == cli.EXIT_OK
    data = json.loads(out)
    assert data["model"] == "efficientnet_lite0" and data["report"] is None
    [image] = data["images"]
    assert image["ok"] and len(image["top_classes"]) == 3
    assert "self_aware" in image and "attributive" not in image and "counterfactual" not in image
    [triple] = image["insecurities"]  # E = 3, V = 3: exactly one triple, the top three classes
    assert sorted(triple["class_ids"]) == sorted(c["class_id"] for c in image["top_classes"])
    assert len(triple["labels"]) == 3 and triple["pixel_count"] > 0


def test_models_lists_the_local_model(capsys, local_backend, monkeypatch):
    monkeypatch.setattr(cli, "open_backend", lambda args: local_backend)
    status, out, _ = run(capsys, "models", "--local", "--json", "--labels")
    data = json.loads(out)
    assert status == 0 and data["num_classes"] == 1000 and data["labels"][281] == "tabby"
    assert data["feature_grid"] == [7, 7] and data["input_size"] == 224


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("galore")
    result = subprocess.run([str(script), "explain", "/nonexistent.jpg"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "/nonexistent.jpg: no such file" in result.stderr


def test_a_folder_run_on_a_terminal_shows_a_progress_bar(chelsea_path, tmp_path):
    import fcntl
    import os
    import pty
    import shutil as sh
    import struct
    import termios

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        sh.copy(chelsea_path, folder / name)
    script = Path(sys.executable).with_name("galore")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([str(script), "explain", str(folder), "--local", "--device", "cpu", "--no-report",
                             "--kinds", "attributive", "--batch-size", "1"],
                            stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    assert proc.wait(timeout=300) == cli.EXIT_OK
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "3/3" in text and "img" in text  # tqdm's counter reached every image
    assert text.count("(451x300)") == 3
