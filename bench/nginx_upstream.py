"""The upstream stand-in: nginx answering fixed OpenAI-shaped bodies from memory.

One nginx process (`master_process off`, one worker, no access log) on
127.0.0.1 answers:

- `POST /v1/chat/completions`: a fixed chat completion JSON;
- `POST /sse/v1/chat/completions`: a fixed SSE stream of `SSE_CHUNKS` chunks
  then `data: [DONE]` (the gateway's `bench-sse` instance has
  `api_base_url` `http://127.0.0.1:P/sse`, since paths are forwarded verbatim);
- 401 with OpenAI's `invalid_api_key` body, for any path, when the
  `Authorization` header carries one of the invalid keys (an nginx `map`).

It must never be the bottleneck: its CPU time is read from /proc for every run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from processes import wait_for_port

SSE_CHUNKS = 20
MODEL = "gpt-4o-mini"
CREATED = 1700000000

INVALID_KEY_BODY = {
    "error": {
        "message": "Incorrect API key provided: sk-bench***. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def completion_body() -> str:
    """A fixed non-streamed chat completion, as OpenAI sends it."""
    body = {
        "id": "chatcmpl-bench0000000000000000000000",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33},
        "system_fingerprint": "fp_bench",
    }
    return json.dumps(body, separators=(",", ":"))


def sse_body(chunks: int = SSE_CHUNKS) -> str:
    """A fixed SSE stream: `chunks` content deltas, a stop chunk, then `[DONE]`."""
    events = []
    for index in range(chunks):
        finish = "stop" if index == chunks - 1 else None
        delta = {} if finish else {"content": f"tok{index} "}
        event = {
            "id": "chatcmpl-bench0000000000000000000000",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "system_fingerprint": "fp_bench",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        events.append("data: " + json.dumps(event, separators=(",", ":")) + "\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events)


def _quote(text: str) -> str:
    """An nginx single-quoted string literal (no `$` may appear: it would expand)."""
    if "$" in text:
        raise ValueError("nginx literals must not contain '$'")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def _sse_parts(body: str, limit: int = 3000) -> list[str]:
    """Split the SSE body at event boundaries into literals nginx accepts (< 4 KiB each)."""
    parts: list[str] = []
    current = ""
    for event in body.split("\n\n")[:-1]:
        event += "\n\n"
        if current and len(current) + len(event) > limit:
            parts.append(current)
            current = ""
        current += event
    parts.append(current)
    return parts


def render_config(workdir: Path, port: int, invalid_keys: Iterable[str]) -> str:
    """The whole nginx.conf for the stand-in, every path under `workdir`."""
    invalid = "\n".join(f'        "Bearer {key}" 1;' for key in invalid_keys)
    parts = _sse_parts(sse_body())
    sse_maps = "\n".join(
        f"    map $request_method $bench_sse_{i} {{ default {_quote(part)}; }}"
        for i, part in enumerate(parts)
    )
    sse_return = '"' + "".join(f"${{bench_sse_{i}}}" for i in range(len(parts))) + '"'
    temp = {name: workdir / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    return f"""
worker_processes 1;
master_process off;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server_tokens off;
    client_body_buffer_size 64k;
    map_hash_max_size 16384;
    map_hash_bucket_size 128;
{sse_maps}
    map $http_authorization $bench_invalid {{
        default 0;
{invalid}
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        default_type application/json;
        if ($bench_invalid) {{
            return 401 {_quote(json.dumps(INVALID_KEY_BODY, separators=(",", ":")))};
        }}
        location = /v1/chat/completions {{
            return 200 {_quote(completion_body())};
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {sse_return};
        }}
        location / {{
            return 404 '{{"error":{{"message":"not found","type":"invalid_request_error"}}}}';
        }}
    }}
}}
"""


class NginxUpstream:
    """Runs the stand-in pinned to `cpu`; `pid` is the one process doing the work."""

    def __init__(self, port: int, invalid_keys: Iterable[str], cpu: int) -> None:
        """Prepare (not start) an nginx on 127.0.0.1:`port`."""
        self.port = port
        self._invalid = list(invalid_keys)
        self._cpu = cpu
        self._dir = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """The origin clients and the gateway call."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The nginx process id (master_process off: it serves every request)."""
        if self._process is None:
            raise RuntimeError("nginx is not running")
        return self._process.pid

    def start(self) -> None:
        """Write the config, check it with `nginx -t`, start and wait for the port."""
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        conf = self._dir / "nginx.conf"
        conf.write_text(render_config(self._dir, self.port, self._invalid))
        subprocess.run(
            [nginx, "-t", "-q", "-c", str(conf), "-e", str(self._dir / "error.log")],
            check=True,
        )
        self._process = subprocess.Popen(
            [
                "taskset",
                "-c",
                str(self._cpu),
                nginx,
                "-c",
                str(conf),
                "-e",
                str(self._dir / "error.log"),
            ],
            stdin=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self._process, timeout=10.0)

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL after 5 s) and remove its directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        time.sleep(0.05)
        shutil.rmtree(self._dir, ignore_errors=True)
