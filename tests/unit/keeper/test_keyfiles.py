"""Parsing and reading key files (tmp_path only; no store)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmgateway.config.schemas import ProviderConfig
from llmgateway.core.constants import ProviderType
from llmgateway.keeper import keyfiles
from llmgateway.keeper.keyfiles import (
    KeyFileRead,
    load_keys,
    parse_key_lines,
    read_key_files,
    resolve_keys_path,
)


def provider(keys_path: str = "", keys: tuple[str, ...] = ()) -> ProviderConfig:
    return ProviderConfig(
        name="openai-main",
        provider_type=ProviderType.OPENAI_LIKE,
        api_base_url="https://api.example.com",
        default_model="m",
        keys_path=keys_path,
        keys=keys,
        models={},
    )


class TestParseKeyLines:
    def test_blank_lines_and_comments_are_skipped(self) -> None:
        """Blank lines, whitespace-only lines and '#' lines yield no key."""
        assert parse_key_lines(["", "   ", "# a comment", "  # indented", "sk-1"]) == ["sk-1"]

    def test_whitespace_is_trimmed(self) -> None:
        """Leading and trailing whitespace, CR included, is not part of the key."""
        assert parse_key_lines(["  sk-1\t", "sk-2\r"]) == ["sk-1", "sk-2"]

    def test_trailing_comment_after_whitespace_is_dropped(self) -> None:
        """'key  # note' is the key; a '#' inside the key is kept."""
        assert parse_key_lines(["sk-1  # team a", "sk-2\t# b", "sk#3"]) == ["sk-1", "sk-2", "sk#3"]

    def test_repeats_are_kept_in_order(self) -> None:
        """Parsing keeps order and repeats; de-duplication is the reader's job."""
        assert parse_key_lines(["b", "a", "b"]) == ["b", "a", "b"]


class TestReadKeyFiles:
    def test_files_read_in_name_order_and_duplicates_collapsed(self, tmp_path: Path) -> None:
        """Keys of all *.txt files, sorted by file name, first occurrence kept."""
        (tmp_path / "b.txt").write_text("k-3\nk-1\n")
        (tmp_path / "a.txt").write_text("# team a\nk-1\n\nk-2\n")
        (tmp_path / "notes.md").write_text("not-a-key\n")
        assert read_key_files(tmp_path) == KeyFileRead(("k-1", "k-2", "k-3"))

    def test_byte_order_mark_is_not_part_of_the_first_key(self, tmp_path: Path) -> None:
        """A UTF-8 BOM written by some editors does not end up in the key."""
        (tmp_path / "keys.txt").write_bytes("\ufeffk-1\n".encode())
        assert read_key_files(tmp_path).keys == ("k-1",)

    def test_missing_folder_is_an_error_naming_it(self, tmp_path: Path) -> None:
        """A folder that does not exist gives no keys and an error with its path."""
        missing = tmp_path / "nope"
        read = read_key_files(missing)
        assert read.keys == ()
        assert not read.ok
        assert str(missing) in read.errors[0]

    def test_a_file_instead_of_a_folder_is_an_error(self, tmp_path: Path) -> None:
        """keys_path naming a file is reported, not read."""
        file = tmp_path / "keys.txt"
        file.write_text("k\n")
        assert "not a folder" in read_key_files(file).errors[0]

    def test_undecodable_file_is_an_error_and_others_are_read(self, tmp_path: Path) -> None:
        """A non-UTF-8 file is named in the errors; the other files still give their keys."""
        (tmp_path / "a.txt").write_bytes(b"\xff\xfe\x00bad")
        (tmp_path / "b.txt").write_text("k-1\n")
        read = read_key_files(tmp_path)
        assert read.keys == ("k-1",)
        assert len(read.errors) == 1 and "a.txt" in read.errors[0]

    @pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
    def test_unreadable_file_is_an_error(self, tmp_path: Path) -> None:
        """A file without read permission is named in the errors."""
        locked = tmp_path / "locked.txt"
        locked.write_text("k-1\n")
        locked.chmod(0)
        try:
            assert "locked.txt" in read_key_files(tmp_path).errors[0]
        finally:
            locked.chmod(0o600)

    def test_dangling_link_is_an_error(self, tmp_path: Path) -> None:
        """A *.txt link to a file that is gone is named in the errors (works as root too)."""
        (tmp_path / "gone.txt").symlink_to(tmp_path / "elsewhere" / "keys.txt")
        read = read_key_files(tmp_path)
        assert read.keys == ()
        assert "gone.txt" in read.errors[0]

    def test_empty_folder_reads_no_keys_without_error(self, tmp_path: Path) -> None:
        """An existing folder without key files is a valid, empty key list."""
        assert read_key_files(tmp_path) == KeyFileRead(())


class TestLoadKeys:
    async def test_files_then_inline_keys_without_repeats(self, tmp_path: Path) -> None:
        """File keys come first, then inline keys not already read."""
        folder = tmp_path / "keys" / "openai-main"
        folder.mkdir(parents=True)
        (folder / "k.txt").write_text("k-1\nk-2\n")
        read = await load_keys(provider("keys/openai-main/", ("k-2", " k-3 ")), cwd=tmp_path)
        assert read == KeyFileRead(("k-1", "k-2", "k-3"))

    async def test_no_keys_path_means_inline_keys_only(self, tmp_path: Path) -> None:
        """An empty keys_path reads no folder and reports no error."""
        assert await load_keys(provider("", ("k-1",)), cwd=tmp_path) == KeyFileRead(("k-1",))

    async def test_missing_folder_keeps_inline_keys_and_reports(self, tmp_path: Path) -> None:
        """A missing keys folder is an error even when inline keys exist."""
        read = await load_keys(provider("keys/absent", ("k-1",)), cwd=tmp_path)
        assert read.keys == ("k-1",)
        assert str(tmp_path / "keys" / "absent") in read.errors[0]

    def test_relative_paths_resolve_against_the_working_directory(self, tmp_path: Path) -> None:
        """A relative keys_path is taken from cwd; an absolute one is kept."""
        assert resolve_keys_path("keys/a", tmp_path) == tmp_path / "keys" / "a"
        assert resolve_keys_path("/srv/keys", tmp_path) == Path("/srv/keys")


class TestReadInBlocks:
    def test_lines_split_across_blocks_are_whole_keys(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file read a few characters at a time gives the keys a whole read gives."""
        text = "\ufeffsk-first-key\r\n# a comment\r\n\r\nsk-second  # note\nsk-third\rsk-last"
        (tmp_path / "keys.txt").write_text(text, encoding="utf-8")
        whole = read_key_files(tmp_path).keys
        assert whole == ("sk-first-key", "sk-second", "sk-third", "sk-last")
        for block in (1, 2, 5, 7, 13):
            monkeypatch.setattr(keyfiles, "READ_BLOCK", block)
            assert read_key_files(tmp_path).keys == whole, block


class TestReuse:
    """`load_keys` returns the previous read when the files are as they were, and settled."""

    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        folder = tmp_path / "keys"
        folder.mkdir()
        (folder / "a.txt").write_text("k-1\nk-2\n")
        return folder

    async def test_settled_unchanged_files_are_not_read_again(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Same names, sizes, times and inodes: the very same read comes back."""
        monkeypatch.setattr(keyfiles, "SETTLE_NS", 0)
        first = await load_keys(provider(str(folder), ("k-9",)))
        assert first.source is not None
        assert await load_keys(provider(str(folder), ("k-9",)), previous=first) is first

    async def test_a_changed_file_is_read_again(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A rewrite of the same size with its old modification time is still seen (ctime)."""
        monkeypatch.setattr(keyfiles, "SETTLE_NS", 0)
        first = await load_keys(provider(str(folder)))
        stat = (folder / "a.txt").stat()
        (folder / "a.txt").write_text("k-1\nk-3\n")
        os.utime(folder / "a.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
        again = await load_keys(provider(str(folder)), previous=first)
        assert again is not first
        assert again.keys == ("k-1", "k-3")

    async def test_an_added_file_or_other_inline_keys_are_read_again(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A new key file, or a change of the inline keys, makes a new read."""
        monkeypatch.setattr(keyfiles, "SETTLE_NS", 0)
        first = await load_keys(provider(str(folder)))
        inline = await load_keys(provider(str(folder), ("k-5",)), previous=first)
        assert inline is not first and inline.keys == ("k-1", "k-2", "k-5")
        (folder / "b.txt").write_text("k-4\n")
        added = await load_keys(provider(str(folder), ("k-5",)), previous=inline)
        assert added.keys == ("k-1", "k-2", "k-4", "k-5")

    async def test_files_changed_just_before_the_read_are_read_again(self, folder: Path) -> None:
        """A file changed within the settling time could change again unseen: never reused."""
        first = await load_keys(provider(str(folder)))
        assert first.source is None
        again = await load_keys(provider(str(folder)), previous=first)
        assert again is not first and again == first

    async def test_a_read_with_errors_is_never_reused(
        self, folder: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file that could not be decoded is tried again at the next read."""
        monkeypatch.setattr(keyfiles, "SETTLE_NS", 0)
        (folder / "b.txt").write_bytes(b"\xff\xfe")
        first = await load_keys(provider(str(folder)))
        assert not first.ok and first.source is None
