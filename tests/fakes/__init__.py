"""Test doubles at the process boundary: a fake and a hostile LLM upstream, a cutting TCP proxy."""

from tests.fakes.cutting_proxy import CuttingProxy, refused_port
from tests.fakes.family import Behaviour
from tests.fakes.hostile_upstream import HostileUpstream, Hostility
from tests.fakes.upstream import FakeUpstream, KeyRule, RecordedRequest

__all__ = [
    "Behaviour",
    "CuttingProxy",
    "FakeUpstream",
    "HostileUpstream",
    "Hostility",
    "KeyRule",
    "RecordedRequest",
    "refused_port",
]
