"""Test doubles at the process boundary: a fake LLM upstream and a cutting TCP proxy."""

from tests.fakes.cutting_proxy import CuttingProxy, refused_port
from tests.fakes.family import Behaviour
from tests.fakes.upstream import FakeUpstream, KeyRule, RecordedRequest

__all__ = [
    "Behaviour",
    "CuttingProxy",
    "FakeUpstream",
    "KeyRule",
    "RecordedRequest",
    "refused_port",
]
