"""The Dockerfile's build arguments and its build context, read from the files themselves."""

from __future__ import annotations

import re
import shlex

from tests.support.container import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
DOCKERIGNORE = (ROOT / ".dockerignore").read_text(encoding="utf-8")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    pairs: list[tuple[str, str]] = []
    for line in joined.splitlines():
        words = line.strip().split(None, 1)
        if words and not words[0].startswith("#"):
            pairs.append((words[0].upper(), words[1] if len(words) > 1 else ""))
    return pairs


def test_every_stage_starts_from_the_base_argument_which_defaults_to_the_slim_image() -> None:
    """`ARG BASE_IMAGE=python:3.13-slim` before the first FROM; each FROM uses it."""
    instructions = _instructions()
    first_from = next(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    assert ("ARG", "BASE_IMAGE=python:3.13-slim") in instructions[:first_from]
    stages = [args.split()[0] for name, args in instructions if name == "FROM"]
    assert stages and set(stages) == {"${BASE_IMAGE}"}


def test_the_package_index_is_an_empty_build_argument() -> None:
    """`ARG PIP_INDEX_URL=` (pip's own default) and no index address written anywhere."""
    assert ("ARG", "PIP_INDEX_URL=") in _instructions()
    addresses = re.findall(r"\w+://[^\s'\"]+", DOCKERFILE)
    assert all(address.startswith("http://127.0.0.1:") for address in addresses)


def test_the_build_context_is_what_the_copy_lines_need() -> None:
    """.dockerignore drops everything, then lets in exactly the sources COPY names."""
    patterns = [line for line in DOCKERIGNORE.splitlines() if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied: set[str] = set()
    for name, args in _instructions():
        words = shlex.split(args)
        if name == "COPY" and not any(word.startswith("--from") for word in words):
            copied.update(word.rstrip("/") for word in words[:-1])
    assert copied == allowed
