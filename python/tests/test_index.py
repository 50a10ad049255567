import json

import numpy as np
import pytest

import exemplar
from conftest import binary, run, sample_lines

QUERIES = [
    "How many positive divisors does 36 have?",
    "What is the area of a rectangle with perimeter 24?",
    "Solve for x: 2x + 3 = 11.",
]


def cli_ids(index, text, k, *flags):
    out = run(binary("embed"), "index", "query", "--index", str(index), "--text", text,
              "-k", str(k), "--json", *flags)
    return [r["id"] for r in json.loads(out)["results"]]


def test_search_returns_the_clis_ids(tiny_index):
    idx = exemplar.Index.open(tiny_index)
    for q in QUERIES:
        hits = idx.search(q, k=5)
        assert [h.id for h in hits] == cli_ids(tiny_index, q, 5)
        assert all(isinstance(h.record, dict) and h.record["id"] == h.id for h in hits)
        assert hits[0].score >= hits[-1].score
    many = idx.search(QUERIES, k=3)
    assert [[h.id for h in hs] for hs in many] == [cli_ids(tiny_index, q, 3) for q in QUERIES]


def test_filter_as_the_cli(tiny_index):
    idx = exemplar.Index.open(tiny_index)
    subject = idx.search(QUERIES[0], k=1)[0].record["subject"]
    hits = idx.search(QUERIES[0], k=4, filter=f"subject={subject}")
    assert [h.id for h in hits] == cli_ids(tiny_index, QUERIES[0], 4, "--filter", f"subject={subject}")
    assert all(h.record["subject"] == subject for h in hits)
    assert [h.id for h in idx.search(QUERIES[0], k=4, filter={"subject": subject})] == [h.id for h in hits]
    with pytest.raises(ValueError, match="expected FIELD=VALUE"):
        idx.search(QUERIES[0], filter="subject")


def test_search_vectors_len_and_info(tiny_index):
    idx = exemplar.Index.open(tiny_index)
    info = idx.info()
    assert len(idx) == info["count"] == 60 and idx.dim == info["dim"]
    enc = exemplar.Encoder(info["embeddings"]["model_path"])
    v = enc.encode(QUERIES, kind="query")
    by_vector = idx.search_vectors(v, k=4)
    assert [[h.id for h in hs] for hs in by_vector] == [[h.id for h in hs] for hs in idx.search(QUERIES, k=4)]
    # A stored problem's own vector finds it first; scale does not matter (rows are normalised).
    own = json.loads(sample_lines("train.jsonl", 1)[0])
    first = idx.search_vectors(3.0 * enc.encode(own["problem"]), k=1)[0]
    assert first.id == own["id"]
    with pytest.raises(ValueError, match="the index holds"):
        idx.search_vectors(np.zeros(idx.dim + 1, dtype=np.float32))
    with pytest.raises(ValueError, match="-k must be at least 1"):
        idx.search(QUERIES[0], k=0)
