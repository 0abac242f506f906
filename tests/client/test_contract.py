"""The contract's terms have one torch-free home, and every option reaches every interface.

* the ``galore`` command (its start-up: ``galore_cli.main``, ``loadtest``, ``report``) and ``galore_gateway`` import
  without torch (checked in a fresh interpreter; the client library itself: test_lean_client.py);
* every field of the proto's ``ExplainOptions`` has a client spelling (an ``ExplainSettings`` keyword) and a CLI
  spelling (``galore explain`` and ``galore loadtest`` flags), and setting it through either reaches the wire and
  the engine options the handler builds from it.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor

from galore.options import ExplainOptions
from galore_api.v1 import explainer_pb2 as pb
from galore_cli import loadtest, main as cli
from galore_cli.option_args import FLAGS, settings_from_args
from galore_client.settings import OPTION_FIELDS, ExplainSettings
from galore_client.typed import settings_to_proto
from galore_wire.contract import PROTO_ENUMS, engine_member

REPO = Path(__file__).resolve().parents[2]
FIELDS = list(pb.ExplainOptions.DESCRIPTOR.fields)
CLIENT_ONLY = {"prediction_only"}  # an ExplainSettings keyword with no ExplainOptions field (kinds = none)


def test_cli_and_gateway_import_without_torch():
    code = ("import sys\n"
            "import galore_client, galore_client.client, galore_cli.main, galore_cli.loadtest\n"
            "import galore_cli.report, galore_client.typed, galore_cli.option_args\n"
            "import galore_gateway, galore_gateway.server, galore_gateway.config, galore_gateway.__main__\n"
            "import galore_wire.contract, galore_wire.status, galore_wire.backpressure, galore.options, galore.errors\n"
            "loaded = sorted(m for m in ('torch', 'torchvision') if m in sys.modules)\n"
            "print(','.join(loaded) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none", f"importing the CLI or the gateway loaded {done.stdout.strip()}"


def test_the_contract_terms_import_neither_torch_nor_grpc():
    code = ("import sys\nimport galore_wire, galore_wire.contract, galore_wire.status, galore_wire.backpressure\n"
            "import galore.options, galore.errors\n"
            "print(','.join(sorted(m for m in ('torch', 'grpc', 'numpy') if m in sys.modules)) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and done.stdout.strip() == "none", done.stdout + done.stderr


def _engine_enum(field: FieldDescriptor):
    return next(e for e, (name, _) in PROTO_ENUMS.items() if name == field.enum_type.name)


def non_default(field: FieldDescriptor) -> tuple[list[str], dict]:
    """A value other than the default for ``field``: as CLI words after its flag, and as ExplainSettings keywords."""
    defaults = ExplainOptions()
    if field.name == "threshold":
        return ["--coverage", "0.5"], {"coverage": 0.5}
    if field.name == "counter_classes":
        return ["--counter-classes", "7"], {"counter_classes": (7,)}
    if field.name == "prediction_only":
        return ["--prediction-only"], {"prediction_only": True}
    if field.type == FieldDescriptor.TYPE_ENUM:
        member = engine_member(pb.DESCRIPTOR, _engine_enum(field), field.enum_type.values[-1].number)
        if field.is_repeated:
            return [FLAGS[field.name][0], member.value], {field.name: (member.value,)}
        return [FLAGS[field.name][0], member.value], {field.name: member.value}
    if field.type == FieldDescriptor.TYPE_BOOL:
        flipped = not getattr(defaults, field.name)
        return [f"--{'' if flipped else 'no-'}{field.name.replace('_', '-')}"], {field.name: flipped}
    if field.is_repeated:  # repeated ints (dims)
        return [FLAGS[field.name][0], "3"], {field.name: (3,)}
    return [FLAGS[field.name][0], "3"], {field.name: 3}


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_proto_option_has_a_client_and_a_cli_spelling(field):
    assert field.name in FLAGS, f"ExplainOptions.{field.name} has no command-line flag (option_args.FLAGS)"
    assert field.name in OPTION_FIELDS or field.name in CLIENT_ONLY, \
        f"ExplainOptions.{field.name} has no ExplainSettings keyword (galore.options.ExplainOptions field)"


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_proto_option_set_through_the_client_reaches_the_wire(field):
    _, keywords = non_default(field)
    wire = settings_to_proto(ExplainSettings(**keywords))
    assert field.name in {f.name for f, _ in wire.ListFields()}, f"{keywords} did not set options.{field.name}"


def _explain_parser() -> argparse.ArgumentParser:
    return cli.build_parser()


def _loadtest_args(words: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadtest.add_loadtest_parser(parser.add_subparsers())
    return parser.parse_args(["loadtest", *words])


@pytest.mark.parametrize("field", FIELDS, ids=[f.name for f in FIELDS])
def test_every_proto_option_set_on_the_command_line_reaches_the_wire(field):
    words, keywords = non_default(field)
    expected = settings_to_proto(ExplainSettings(**keywords))
    explain_args = _explain_parser().parse_args(["explain", "x.jpg", "--no-report", *words])
    load_args = _loadtest_args(words)
    sent = {"galore explain": settings_from_args(explain_args),
            "galore loadtest": loadtest.config_from_args(load_args).settings}  # its whole config, --target and all
    for interface, settings in sent.items():
        wire = settings_to_proto(settings)
        assert wire == expected, f"{interface} {' '.join(words)} sent {wire} instead of {expected}"


def test_command_line_help_states_the_engine_defaults():
    text = _explain_parser()._subparsers._group_actions[0].choices["explain"].format_help()
    defaults = ExplainOptions()
    assert f"(default {defaults.top_e})" in " ".join(text.split())
    assert f"(default {defaults.attribution.value})" in " ".join(text.split())
    assert ExplainSettings().options == defaults and not ExplainSettings().include_heatmaps


@pytest.mark.parametrize("engine_enum", list(PROTO_ENUMS), ids=[e.__name__ for e in PROTO_ENUMS])
def test_engine_enums_and_proto_enums_name_the_same_values(engine_enum):
    """A member added on one side only (e.g. a new attribution function without its proto value) fails here."""
    type_name, prefix = PROTO_ENUMS[engine_enum]
    proto_names = {v.name.removeprefix(prefix) for v in pb.DESCRIPTOR.enum_types_by_name[type_name].values}
    assert proto_names - {"UNSPECIFIED"} == {m.name for m in engine_enum}
    for member in engine_enum:
        number = pb.DESCRIPTOR.enum_types_by_name[type_name].values_by_name[prefix + member.name].number
        assert engine_member(pb.DESCRIPTOR, engine_enum, number) is member


def test_explained_class_by_label_or_id_reaches_the_wire():
    by_label = settings_to_proto(ExplainSettings(explained_class="tabby"))
    assert by_label.explained_class.WhichOneof("class_ref") == "label" and by_label.explained_class.label == "tabby"
    by_id = settings_to_proto(ExplainSettings(explained_class="281"))
    assert by_id.explained_class.class_id == 281
    args = _explain_parser().parse_args(["explain", "x.jpg", "--no-report", "--explain-class", "tiger cat"])
    assert settings_to_proto(settings_from_args(args)).explained_class.label == "tiger cat"
    assert not settings_to_proto(ExplainSettings()).HasField("explained_class")  # unset: y*
