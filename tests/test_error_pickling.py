"""The project's errors survive pickling whole (class, field, message, status): a worker process that raises one
(the synthetic benchmark's pinned training and evaluation) hands it to its caller as raised."""
from __future__ import annotations

import pickle

from galore.errors import InvalidArgument, ModelError
from galore.evaluate.cub import CubFormatError
from galore_cli.status import CliError
from galore_client.errors import GaloreClientError


def test_errors_pickle_with_their_fields():
    for error in (InvalidArgument("resume", "bad"), CubFormatError("images.txt:3", "two fields"), ModelError("", "x"),
                  GaloreClientError("UNAVAILABLE", "down", "image.data", 503), CliError("no such folder", 2)):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        for name in ("field", "message", "code", "status", "http_status"):
            assert getattr(again, name, None) == getattr(error, name, None), name
