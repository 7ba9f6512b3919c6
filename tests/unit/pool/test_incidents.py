"""The incident guard: when many working keys failing alike is the upstream's incident."""

from __future__ import annotations

from llmgateway.core.constants import ErrorReason
from llmgateway.pool.incidents import (
    BACKOFF_MAX,
    BACKOFF_START,
    MAX_DURATION,
    IncidentGuard,
)

R = ErrorReason.INVALID_KEY


class TestObserve:
    def test_half_of_the_valid_keys_and_three_make_an_incident(self) -> None:
        """Three of six working keys hit alike within the window: an incident, naming them."""
        guard = IncidentGuard(window=10.0)
        assert guard.observe("p", R, 1, usable=6, now=0.0) is None
        assert guard.observe("p", R, 2, usable=5, now=1.0) is None
        incident = guard.observe("p", R, 3, usable=4, now=2.0)
        assert incident is not None
        assert (incident.hits, incident.base) == (3, 6)
        assert set(incident.touched) == {1, 2, 3}
        assert guard.active("p", R) is incident
        assert "3 of 6 keys answered invalid_key" in incident.describe()

    def test_fewer_than_half_is_no_incident(self) -> None:
        """Three of ten working keys is three bad keys, not an incident."""
        guard = IncidentGuard(window=10.0)
        for key_id, usable in ((1, 10), (2, 9), (3, 8)):
            assert guard.observe("p", R, key_id, usable=usable, now=0.0) is None

    def test_two_keys_are_never_an_incident(self) -> None:
        """Both keys of a two-key pool failing is below the three-key minimum."""
        guard = IncidentGuard(window=10.0)
        assert guard.observe("p", R, 1, usable=2, now=0.0) is None
        assert guard.observe("p", R, 2, usable=1, now=0.0) is None

    def test_hits_outside_the_window_do_not_count(self) -> None:
        """Verdicts older than the window are forgotten."""
        guard = IncidentGuard(window=10.0)
        guard.observe("p", R, 1, usable=4, now=0.0)
        guard.observe("p", R, 2, usable=3, now=5.0)
        assert guard.observe("p", R, 3, usable=2, now=20.0) is None

    def test_reasons_and_instances_are_counted_apart(self) -> None:
        """Different reasons or instances never add up to one incident."""
        guard = IncidentGuard(window=10.0)
        guard.observe("p", ErrorReason.INVALID_KEY, 1, usable=4, now=0.0)
        guard.observe("p", ErrorReason.NO_QUOTA, 2, usable=4, now=0.0)
        assert guard.observe("q", ErrorReason.INVALID_KEY, 3, usable=2, now=0.0) is None

    def test_no_model_never_makes_an_incident(self) -> None:
        """no_model is about one model of one key, never an upstream-wide failure."""
        guard = IncidentGuard(window=10.0)
        for key_id in (1, 2, 3):
            assert guard.observe("p", ErrorReason.NO_MODEL, key_id, usable=1, now=0.0) is None


class TestLifetime:
    def test_backoff_doubles_up_to_five_minutes(self) -> None:
        """A touched key failing its recheck waits 10 s, 20 s, 40 s ... at most 5 min."""
        guard = IncidentGuard(window=10.0)
        for key_id in (1, 2, 3):
            incident = guard.observe("p", R, key_id, usable=3, now=0.0)
        assert incident is not None
        assert incident.backoff(1) == BACKOFF_START
        waits = [guard.failed_again(incident, 1) for _ in range(8)]
        assert waits[:3] == [20.0, 40.0, 80.0]
        assert waits[-1] == BACKOFF_MAX

    def test_the_incident_ends_when_every_touched_key_is_back(self) -> None:
        """recovered() ends the incident with its last touched key."""
        guard = IncidentGuard(window=10.0)
        for key_id in (1, 2, 3):
            guard.observe("p", R, key_id, usable=3, now=0.0)
        assert guard.recovered("p", 1) == []
        assert guard.recovered("p", 2) == []
        (ended,) = guard.recovered("p", 3)
        assert ended.instance == "p" and guard.incidents() == []

    def test_an_incident_expires_after_its_longest_duration(self) -> None:
        """Past MAX_DURATION the incident is over, whatever its keys say."""
        guard = IncidentGuard(window=10.0)
        for key_id in (1, 2, 3):
            guard.observe("p", R, key_id, usable=3, now=0.0)
        assert guard.expire(MAX_DURATION - 1) == []
        assert len(guard.expire(MAX_DURATION)) == 1
        assert guard.active("p", R) is None

    def test_keys_leaving_the_pool_end_the_incident(self) -> None:
        """forget() drops touched keys that are gone; none left ends the incident."""
        guard = IncidentGuard(window=10.0)
        for key_id in (1, 2, 3):
            guard.observe("p", R, key_id, usable=3, now=0.0)
        assert guard.forget("p", {1}) == []
        assert len(guard.forget("p", set())) == 1
