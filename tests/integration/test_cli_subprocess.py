"""`python -m llmgateway` as a real process: config create, then config check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LLMGW_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "llmgateway", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_then_check(tmp_path: Path) -> None:
    """A real process creates a config, refuses a duplicate, and checks it clean once the token is set."""
    created = _run(["config", "create", "openai_like:openai-main"], tmp_path, {})
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "config" / "providers.yaml").is_file()
    assert (tmp_path / "keys" / "openai-main").is_dir()
    assert "Next steps" in created.stdout

    duplicate = _run(["config", "create", "gemini:openai-main"], tmp_path, {})
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    unset = _run(["config", "check"], tmp_path, {})
    assert unset.returncode == 2
    assert "OPENAI_MAIN_TOKEN is not set" in unset.stderr

    checked = _run(["config", "check"], tmp_path, {"OPENAI_MAIN_TOKEN": "tok-0123456789abcdef"})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("OK config/providers.yaml: 1 provider instance")


def test_usage_names_the_program(tmp_path: Path) -> None:
    """`python -m llmgateway --help` presents itself as `llmgateway`."""
    result = _run(["--help"], tmp_path, {})
    assert result.returncode == 0 and result.stdout.startswith("Usage: llmgateway")
