"""`llmgateway keys` output for people: the API's documents as tables and lines."""

from __future__ import annotations

from llmgateway.cli.keys_client import (
    render_add,
    render_changed,
    render_delete,
    render_job,
    render_list,
    render_route,
    server_url,
)


def test_the_server_is_reached_on_this_host_when_it_listens_everywhere() -> None:
    assert server_url("0.0.0.0", 55300) == "http://127.0.0.1:55300"
    assert server_url("::", 8080) == "http://[::1]:8080"
    assert server_url("10.0.0.5", 1) == "http://10.0.0.5:1"
    assert server_url("::1", 2) == "http://[::1]:2"


def test_a_page_of_keys_is_a_table_with_totals_and_the_next_cursor() -> None:
    document = {
        "items": [
            {
                "id": 3,
                "instance": "oai",
                "key": "sk-a...9f3k",
                "fingerprint": "0123456789ab",
                "source": "api",
                "models": {"m1": {"status": "valid"}, "m2": {"status": "no_quota"}},
                "usage": {"requests": 12, "failures": 1, "last_used_at": None},
            }
        ],
        "total": 7,
        "facets": {"status": {"valid": 6, "no_quota": 1}, "instance": {"oai": 7}},
        "next_cursor": "3",
    }
    lines = render_list(document).splitlines()
    assert lines[0].split() == [
        "ID",
        "INSTANCE",
        "KEY",
        "FINGERPRINT",
        "SOURCE",
        "STATUS",
        "REQUESTS",
        "FAILURES",
    ]
    row = ["3", "oai", "sk-a...9f3k", "0123456789ab", "api", "no_quota,valid", "12", "1"]
    assert lines[1].split() == row
    assert "7 keys (1 no_quota, 6 valid)" in lines
    assert lines[-1] == "more: --cursor 3"


def test_outcomes_of_actions_read_as_sentences() -> None:
    assert render_add(
        {"added": 2, "duplicates": 1, "rejected": [{"line": 4, "reason": "empty"}]}
    ) == ("added 2, duplicates 1\nline 4: rejected: empty")
    assert render_delete(
        {"deleted": 1, "refused": [{"id": 9, "reason": "remove it from keys/a.txt"}]}
    ) == ("deleted 1\nkey 9: refused: remove it from keys/a.txt")
    assert render_changed("disable", {"changed": 3}) == "disabled 3"
    assert render_job({"job": 5, "queued": 20}) == "job 5: 20 checks queued"
    assert render_job(
        {
            "id": 5,
            "kind": "recheck",
            "state": "done",
            "done": 20,
            "total": 20,
            "results": {"valid": 19, "invalid_key": 1},
        }
    ) == ("job 5 (recheck): done, 20/20 done (1 invalid_key, 19 valid)")


def test_a_route_names_the_next_key_and_each_skipped_one() -> None:
    text = render_route(
        {
            "instance": "oai",
            "model": "gpt",
            "usable": 1,
            "next": {"id": 1, "key": "sk-a...aaaa", "status": "valid"},
            "skipped": [{"id": 2, "key": "sk-b...bbbb", "why": "status disabled"}],
            "counts": {"valid": 1, "disabled": 1},
        }
    )
    assert text.splitlines() == [
        "oai/gpt: 1 usable",
        "next: sk-a...aaaa (id 1)",
        "statuses: 1 disabled, 1 valid",
        "skipped:",
        "  sk-b...bbbb (id 2): status disabled",
    ]
    assert "next: none" in render_route(
        {"instance": "oai", "model": "gpt", "usable": 0, "next": None, "skipped": [], "counts": {}}
    )
