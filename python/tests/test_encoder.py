import json
import threading
import time

import numpy as np
import pytest

import exemplar
from conftest import TINY, binary, run, sample_lines


def cli_encode(tmp_path, model, texts, kind, *flags):
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    run(binary("embed"), "encode", "--model", str(model), "--input", str(inp), "--output", str(out),
        "--kind", kind, "--quiet", *flags)
    return np.array([json.loads(l)["embedding"] for l in out.read_text().splitlines()], dtype=np.float32)


def texts(n):
    return [json.loads(l)["problem"] for l in sample_lines("train.jsonl", n)]


@pytest.mark.parametrize("kind", ["document", "query"])
def test_tiny_model_equals_embed_encode(tmp_path, kind):
    t = texts(24)
    got = exemplar.Encoder(TINY).encode(t, kind=kind)
    want = cli_encode(tmp_path, TINY, t, kind)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-6


def test_minilm_equals_embed_encode(tmp_path, minilm):
    t = texts(24)
    for kind in ("document", "query"):
        got = exemplar.Encoder(str(minilm)).encode(t, kind=kind)
        want = cli_encode(tmp_path, minilm, t, kind)
        assert np.max(np.abs(got - want)) <= 1e-6, kind


def test_instruction_and_recipe_flags_are_the_clis(tmp_path):
    t = texts(6)
    enc = exemplar.Encoder(TINY, pooling="last", max_length=32)
    got = enc.encode(t, kind="query", instruction="Find a similar problem")
    want = cli_encode(tmp_path, TINY, t, "query", "--pooling", "last", "--max-length", "32",
                      "--instruction", "Find a similar problem")
    assert np.max(np.abs(got - want)) <= 1e-6
    # The instruction was for that call only.
    default = cli_encode(tmp_path, TINY, t, "query", "--pooling", "last", "--max-length", "32")
    assert np.max(np.abs(enc.encode(t, kind="query") - default)) <= 1e-6


def test_one_string_gives_one_vector():
    enc = exemplar.Encoder(TINY)
    v = enc.encode("How many divisors does 36 have?")
    assert v.shape == (enc.dim,)
    assert enc.encode([]).shape == (0, enc.dim)
    assert enc.info()["dim"] == enc.dim


def test_bad_arguments_raise_value_error_with_the_clis_message():
    with pytest.raises(ValueError, match="invalid value 'sideways' for '--pooling"):
        exemplar.Encoder(TINY, pooling="sideways")
    with pytest.raises(ValueError, match="kind"):
        exemplar.Encoder(TINY).encode(["x"], kind="sentence")
    with pytest.raises(TypeError, match="unexpected keyword argument 'poolin'"):
        exemplar.Encoder(TINY, poolin="mean")
    with pytest.raises(RuntimeError, match="text #2 is empty"):
        exemplar.Encoder(TINY).encode(["a", " "])


def test_encode_releases_the_gil():
    """A Python thread keeps running while a long encode works in Rust."""
    enc = exemplar.Encoder(TINY)
    many = texts(400) * 3
    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=tick)
    th.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    enc.encode(many)
    t1 = time.perf_counter()
    stop.set()
    th.join()
    during = [t for t in ticks if t0 < t < t1]
    assert t1 - t0 > 0.1, "the encode was too short to tell"
    # Held GIL: the thread could not run at all until the call returned.
    assert len(during) >= 10, f"{len(during)} ticks in {t1 - t0:.2f} s"
