"""The live configuration: reload from the file, refuse it whole, swap it in one step."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from llmgateway.config.accessor import ConfigAccessor
from llmgateway.config.diff import ConfigDiff
from llmgateway.config.live import Commit, LiveConfig
from llmgateway.config.loader import load_config
from llmgateway.core.errors import StoreError
from tests.unit.config.conftest import MINIMAL

SECOND = """\
  second:
    provider_type: anthropic
    keys: ["sk-second-0123456789abcdef"]
    access_control:
      gateway_access_token: "tok-second-0123456789"
"""


class Part:
    """A part of the application that records what a reload asks of it."""

    def __init__(self, live: LiveConfig, refuse: bool = False) -> None:
        self.live = live
        self.refuse = refuse
        self.prepared: list[ConfigDiff] = []
        self.seen_at_commit: list[ConfigAccessor] = []

    async def prepare_reload(self, new: ConfigAccessor, diff: ConfigDiff) -> Commit:
        self.prepared.append(diff)
        if self.refuse:
            raise StoreError("the store is down")

        def commit() -> None:
            assert self.live.current is new  # swapped before any part commits
            self.seen_at_commit.append(new)

        return commit


def _live(tmp_path: Path, text: str = MINIMAL) -> tuple[LiveConfig, Path]:
    path = tmp_path / "providers.yaml"
    path.write_text(text, encoding="utf-8")
    return LiveConfig(ConfigAccessor(load_config(path, {})), path=path, env={}), path


async def test_a_reload_swaps_the_configuration_and_tells_every_part(tmp_path: Path) -> None:
    """An added instance is in the new `current`; a request's accessor taken before keeps the old."""
    live, path = _live(tmp_path)
    part = Part(live)
    live.follow(part)
    in_flight = live.current
    path.write_text(MINIMAL + SECOND, encoding="utf-8")

    with capture_logs() as logs:
        result = await live.reload()

    assert result.document() == {
        "applied": True,
        "added": ["second"],
        "removed": [],
        "changed": [],
        "errors": [],
    }
    assert live.current is not in_flight
    assert live.current.get_provider("second") is not None
    assert in_flight.get_provider("second") is None
    assert part.seen_at_commit == [live.current]
    assert [e["event"] for e in logs] == ["config_reloaded"]
    assert logs[0]["added"] == ["second"]


async def test_an_invalid_file_changes_nothing(tmp_path: Path) -> None:
    """A file with problems is refused whole: same `current`, no part asked, errors returned."""
    live, path = _live(tmp_path)
    part = Part(live)
    live.follow(part)
    before = live.current
    path.write_text((MINIMAL + SECOND).replace("anthropic", "nope"), encoding="utf-8")

    with capture_logs() as logs:
        result = await live.reload()

    assert not result.applied
    assert len(result.errors) == 1 and "providers.second.provider_type" in result.errors[0]
    assert result.document()["added"] == []
    assert live.current is before and part.prepared == []
    assert [e["event"] for e in logs] == ["config_reload_failed"]
    assert logs[0]["errors"] == list(result.errors)


async def test_an_option_fixed_while_serving_refuses_the_reload(tmp_path: Path) -> None:
    """A new port (with an added instance beside it) is an error: nothing of it is applied."""
    live, path = _live(tmp_path)
    before = live.current
    path.write_text("server: {port: 55301}\n" + MINIMAL + SECOND, encoding="utf-8")

    result = await live.reload()

    assert not result.applied
    assert result.errors == (
        "server.port cannot change while serving; restart llmgateway to apply it",
    )
    assert result.document()["added"] == ["second"]
    assert live.current is before


async def test_a_part_that_cannot_prepare_refuses_the_reload(tmp_path: Path) -> None:
    """One part failing to prepare: no part commits, `current` stays."""
    live, path = _live(tmp_path)
    first, failing = Part(live), Part(live, refuse=True)
    live.follow(first)
    live.follow(failing)
    before = live.current
    path.write_text(MINIMAL + SECOND, encoding="utf-8")

    result = await live.reload()

    assert not result.applied
    assert result.errors == ("StoreError: the store is down",)
    assert live.current is before
    assert len(first.prepared) == 1 and first.seen_at_commit == []


async def test_a_dry_run_only_compares(tmp_path: Path) -> None:
    """dry_run answers the diff; nothing is prepared or swapped."""
    live, path = _live(tmp_path)
    part = Part(live)
    live.follow(part)
    before = live.current
    path.write_text(MINIMAL + SECOND, encoding="utf-8")

    result = await live.reload(dry_run=True)

    assert (result.applied, result.diff.added, result.errors) == (False, ("second",), ())
    assert live.current is before and part.prepared == []
    assert (await live.reload()).applied


async def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    """The file gone: the reload fails with the loader's message, nothing changes."""
    live, path = _live(tmp_path)
    before = live.current
    path.unlink()
    result = await live.reload()
    assert not result.applied and "does not exist" in result.errors[0]
    assert live.current is before


async def test_the_file_in_effect_read_again_asks_no_part(tmp_path: Path) -> None:
    """A reload of an unchanged file is applied already: no part prepares, `current` stays."""
    live, path = _live(tmp_path)
    part = Part(live)
    live.follow(part)
    path.write_text(MINIMAL + SECOND, encoding="utf-8")
    await live.reload()
    in_effect = live.current

    with capture_logs() as logs:
        result = await live.reload()

    assert result.document() == {
        "applied": True,
        "added": [],
        "removed": [],
        "changed": [],
        "errors": [],
    }
    assert live.current is in_effect
    assert len(part.prepared) == 1  # the first reload only
    assert [e["event"] for e in logs] == ["config_unchanged"]
