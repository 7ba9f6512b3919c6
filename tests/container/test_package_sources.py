"""Where the container tests find this machine's Debian mirror and pip index."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.container import debian_mirror, pip_index_url

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def _apt(tmp_path: Path, files: dict[str, str]) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def test_the_mirror_comes_from_a_deb822_sources_file(tmp_path: Path) -> None:
    """The first `deb` archive whose path ends in /debian, trailing slash dropped."""
    apt = _apt(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert debian_mirror(apt) == "http://mirror.example/debian"


def test_security_disabled_and_foreign_archives_are_passed_over(tmp_path: Path) -> None:
    """Security archives, disabled stanzas, deb-src and non-Debian archives never count."""
    apt = _apt(
        tmp_path,
        {
            "sources.list": (
                "# deb http://commented.example/debian bookworm main\n"
                "deb-src http://source.example/debian bookworm main\n"
                "deb https://packages.example/apt cloud-sdk-bookworm main\n"
                "deb http://security.example/debian bookworm-security main\n"
            ),
            "sources.list.d/a.sources": (
                "Types: deb\nURIs: http://disabled.example/debian\nSuites: trixie\nEnabled: no\n"
            ),
            "sources.list.d/b.list": (
                "deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] "
                "https://mirror.example/debian trixie main\n"
            ),
            "sources.list.d/c.list.disabled": "deb http://ignored.example/debian trixie main\n",
        },
    )
    assert debian_mirror(apt) == "https://mirror.example/debian"


def test_no_debian_archive_leaves_the_choice_to_debootstrap(tmp_path: Path) -> None:
    """Without a Debian archive in the sources, no mirror is passed (debootstrap's default)."""
    apt = _apt(tmp_path, {"sources.list": "deb https://packages.example/apt stable main\n"})
    assert debian_mirror(apt) is None


def test_the_pip_index_is_taken_from_the_environment_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PIP_INDEX_URL wins; a local (file:) index cannot serve a container build."""
    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    assert pip_index_url() == "https://index.example/simple"
    monkeypatch.setenv("PIP_INDEX_URL", "file:///srv/simple")
    assert pip_index_url() is None
