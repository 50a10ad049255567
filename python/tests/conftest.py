"""Shared fixtures: the repository's binaries and models, a tiny index, a scripted server.

The binaries (target/release/embed, solve) are the references the package is compared with;
scripts/python-tests.sh builds them before running pytest.
"""

import json
import os
import pathlib
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny-llama-embed"


def cache():
    c = pathlib.Path(os.environ.get("EXEMPLAR_CACHE", ".cache"))
    return c if c.is_absolute() else REPO / c


def binary(name):
    path = REPO / "target" / "release" / name
    assert path.is_file(), f"{path} missing: cargo build --release (scripts/python-tests.sh does)"
    return str(path)


def run(*args, **kw):
    """Run a command that must succeed; its stdout."""
    env = {k: v for k, v in os.environ.items() if k not in ("EXEMPLAR_MODEL", "EXEMPLAR_ENDPOINT")}
    p = subprocess.run(args, capture_output=True, text=True, env=env, **kw)
    assert p.returncode == 0, f"{args}: {p.stderr}"
    return p.stdout


def sample_lines(name, n):
    with open(REPO / "datasets" / "sample" / name) as f:
        return [next(f) for _ in range(n)]


@pytest.fixture(scope="session")
def minilm():
    """all-MiniLM-L6-v2 as scripts/fetch-models.sh installs it; in CI it must be there."""
    path = cache() / "models" / "all-MiniLM-L6-v2"
    if not (path / "model.safetensors").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"all-MiniLM-L6-v2 missing at {path}: run scripts/fetch-models.sh")
        pytest.skip(f"all-MiniLM-L6-v2 not installed at {path}")
    return path


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory):
    """The first 60 sample problems, extracted with the tiny model and indexed by the CLI."""
    d = tmp_path_factory.mktemp("index")
    corpus = d / "corpus.jsonl"
    corpus.write_text("".join(sample_lines("train.jsonl", 60)))
    embed = binary("embed")
    run(embed, "extract", "--model", str(TINY), "--input", str(corpus), "--out", str(d / "emb"),
        "--shards", "1", "--quiet")
    run(embed, "index", "build", "--embeddings", str(d / "emb"), "--out", str(d / "index"), "--quiet")
    return d / "index"


class Scripted:
    """An OpenAI-compatible server that answers "Problem number N: ..." with \\boxed{11 N}."""

    def __init__(self):
        self.requests = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                scripted.requests.append(("GET", self.path, None))
                if self.path.endswith("/models"):
                    self.reply(200, {"object": "list", "data": [
                        {"id": "scripted", "object": "model", "max_model_len": 8192}]})
                else:
                    self.reply(404, {"error": "not here"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
                scripted.requests.append(("POST", self.path, body))
                if not self.path.endswith("/chat/completions"):
                    return self.reply(404, {"error": "not here"})
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                n = int(re.search(r"Problem number (\d+):", user).group(1))
                self.reply(200, {
                    "id": "cmpl", "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": f"So the answer is \\boxed{{{11 * n}}}."}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
                })

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def chats(self):
        return [r for r in self.requests if r[0] == "POST" and r[1].endswith("/chat/completions")]


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.httpd.shutdown()


def problem(i):
    return f"Problem number {i}: what is {i} times eleven?"
