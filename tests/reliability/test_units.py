"""Hand-checked pieces of the reliability settings: deadline parsing, restart backoff, the gateway's in-flight
limit derived from TorchServe's queue, and the overload wording."""
from __future__ import annotations

import pytest

from galore_gateway.config import GatewayConfig, read_properties
from galore_supervisor.deployment import Backoff
from galore_wire.contract import DEADLINE_KEY
from galore_wire.status import overloaded
from handlers.galore_handler import to_request
from tests.conftest import REPO


class Headers:
    """The one method of TorchServe's context that the TorchServe adapter reads for headers."""

    def __init__(self, headers: dict):
        self.headers = headers

    def get_all_request_header(self, idx: int) -> dict:
        return self.headers

@pytest.mark.parametrize("row, headers, expected", [
    ({DEADLINE_KEY: b"1764633600.25"}, {}, 1764633600.25),  # the gateway's input key
    ({"body": b""}, {"galore-deadline": "12.5"}, 12.5),  # a REST header
    ({"body": b""}, {"Galore-Deadline": "12.5"}, 12.5),  # header names are case-insensitive
    ({DEADLINE_KEY: b"soon"}, {}, None),  # unreadable: served as if it had none
    ({DEADLINE_KEY: b"inf"}, {}, None),
    ({DEADLINE_KEY: b"nan"}, {}, None),
    ({"body": b""}, {}, None),
])
def test_deadline_is_read_from_the_gateway_key_or_the_rest_header(row, headers, expected):
    assert to_request(row, Headers(headers), 0).deadline == expected

def test_restart_backoff_doubles_up_to_its_cap():
    backoff = Backoff(initial_s=1.0, max_s=5.0)
    assert [backoff.delay(n) for n in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]

@pytest.mark.parametrize("config", [REPO / "deploy" / "torchserve" / "config.properties",
                                    REPO / "deploy" / "k8s" / "base" / "torchserve" / "config.properties"],
                         ids=["local", "pod"])
def test_gateway_forwards_three_quarters_of_torchserve_queue(config):
    queue = int(read_properties(config)["job_queue_size"])
    gateway = GatewayConfig.with_torchserve_config(config)
    assert gateway.max_inflight == queue * 3 // 4 < queue
    assert GatewayConfig.with_torchserve_config(config, max_inflight=5).max_inflight == 5

def test_in_flight_limit_must_be_positive():
    with pytest.raises(ValueError, match="max_inflight"):
        GatewayConfig(max_inflight=0)

def test_overload_message_says_overloaded_and_retry():
    text = overloaded("48 calls in flight at the gateway")
    assert text == "the service is overloaded (48 calls in flight at the gateway); the call may be retried with backoff"
