"""galore_client speaks the KServe host's v1 routes when the REST URL ends in /v1 (unit level, no server)."""
from __future__ import annotations

import pytest

from galore_client.client import RestClient, parse_server


@pytest.mark.parametrize("url, parsed", [
    ("http://127.0.0.1:8080/v1", ("rest", False, "http://127.0.0.1:8080/v1")),
    ("https://h:443/v1/", ("rest", True, "https://h:443/v1")),
    ("http://127.0.0.1:8080", ("rest", False, "http://127.0.0.1:8080")),
])
def test_server_urls_with_and_without_v1(url, parsed):
    assert parse_server(url) == parsed


@pytest.mark.parametrize("url", ["grpc://h:1/v1", "http://h/v1", "http://h:80/v2"])
def test_v1_is_a_rest_suffix_only(url):
    with pytest.raises(ValueError, match="server: expected"):
        parse_server(url)


def test_routes():
    with RestClient("http://h:8080/v1", "m") as kserve, RestClient("http://h:8080", "m") as torchserve:
        assert kserve.url() == kserve.url("explanations") == "http://h:8080/v1/models/m:explain"
        assert torchserve.url() == "http://h:8080/predictions/m"
        assert torchserve.url("explanations") == "http://h:8080/explanations/m"
