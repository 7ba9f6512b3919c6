"""database.encryption_key: read from the environment, validated, held by the masker."""

from __future__ import annotations

from llmgateway.config.accessor import ConfigAccessor
from tests.unit.config.conftest import MINIMAL, LoadText, Problems

HEX = bytes(range(32)).hex()


def test_the_setting_comes_from_the_environment_and_joins_the_secrets(
    load_text: LoadText,
) -> None:
    """`${VAR}` resolves; the value is held by the masker's secrets."""
    text = MINIMAL + 'database:\n  encryption_key: "${LLMGW_ENCRYPTION_KEY}"\n'
    config = load_text(text, {"LLMGW_ENCRYPTION_KEY": HEX})
    assert config.database.encryption_key == HEX
    assert HEX in ConfigAccessor(config).secrets()


def test_a_malformed_setting_is_reported_masked(problems_of: Problems) -> None:
    """The validator names the option and the accepted forms, never the value."""
    secret = "my-weak-passphrase-1234"
    problems = problems_of(MINIMAL + f'database:\n  encryption_key: "{secret}"\n')
    assert any("database.encryption_key" in p and "32 random bytes" in p for p in problems)
    assert not any(secret in p for p in problems)
