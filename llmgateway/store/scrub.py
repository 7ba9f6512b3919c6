"""The data step of migration 5: masking keys in the messages earlier releases stored.

Before every upstream text went through the masker, a provider that quoted a
key in its error (Gemini's "Consumer 'api_key:AIza…' has been suspended") had
it stored in `key_model_status.message`, and shown from there. SQL alone
cannot recognise a key's escaped or encoded forms, so the migration file only
names this step; each engine runs it, in the migration's transaction, with the
rows it reads: every stored key, every non-empty message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from llmgateway.core.masking import Masker

SCRUB_KEY_MESSAGES: Final = "scrub_key_messages"
"""The step's name, as a migration file names it (`-- step: scrub_key_messages`)."""


def scrubbed_messages(
    keys: Iterable[str], rows: Iterable[tuple[int, str, str]]
) -> list[tuple[str, int, str]]:
    """`(masked message, key_id, model)` for each `(key_id, model, message)` row that held a key.

    Rows whose message holds no key (in any form) are left out: nothing to write.
    """
    masker = Masker(keys)
    if not len(masker):
        return []
    updates: list[tuple[str, int, str]] = []
    for key_id, model, message in rows:
        masked = masker.mask_text(message)
        if masked != message:
            updates.append((masked, key_id, model))
    return updates
