import json
import subprocess

import pytest

import exemplar
from conftest import binary, problem


def read_traces(path):
    return [json.loads(l) for l in path.read_text().splitlines()]


def test_solve_answers_and_writes_traces(tiny_index, server, tmp_path):
    traces = tmp_path / "traces.jsonl"
    options = dict(index=tiny_index, endpoint=server.url, model="scripted", samples=2,
                   concurrency=2, traces=traces, time_budget="10m", expected_problems=3,
                   backoff=0.01, max_tokens=512)
    with exemplar.Solver(**options) as s:
        assert [s.solve(f"p{i}", problem(i)) for i in (1, 2, 3)] == [11, 22, 33]
        details = s.solve_details("p4", problem(4))
        assert details["answer"] == 44 and not details["fallback"] and not details["resumed"]
    assert s.closed
    # A restarted notebook answers what the traces hold without asking the server again.
    asked = len(server.chats())
    with exemplar.Solver(**options) as again:
        resumed = again.solve_details("p2", problem(2))
        assert resumed["answer"] == 22 and resumed["resumed"]
    assert len(server.chats()) == asked
    lines = read_traces(traces)
    assert [t["id"] for t in lines] == ["p1", "p2", "p3", "p4"]
    assert [t["answer"] for t in lines] == [11, 22, 33, 44]
    # Retrieval: each problem got the neighbours Index.search finds, in front of the model.
    idx = exemplar.Index.open(tiny_index)
    for t, i in zip(lines, (1, 2, 3, 4)):
        assert [r["id"] for r in t["retrieved"]] == [h.id for h in idx.search(problem(i), k=4)]
    nearest = idx.search(problem(1), k=1)[0].record["problem"]
    prompt = "".join(m["content"] for m in server.chats()[0][2]["messages"])
    assert nearest[:40] in prompt and problem(1) in prompt
    # The time budget was shared across the calls.
    assert [t["serve"]["position"] for t in lines] == [0, 1, 2, 3]
    assert all(t["serve"]["allowed_seconds"] is not None for t in lines)
    with pytest.raises(ValueError, match="closed"):
        s.solve("p4", problem(4))


def test_bad_arguments_raise_value_error_with_the_clis_message(tiny_index, tmp_path):
    for kwargs, message in [
        ({"samples": 0}, "--samples must be at least 1"),
        ({"agreement": 2}, "--agreement 2: expected a share between 0 and 1"),
        ({"samples": "many"}, "invalid value 'many' for '--samples <SAMPLES>'"),
        ({"answer_range": "9..1"}, "MIN is above MAX"),
        ({"tools": "perl"}, "invalid value 'perl' for '--tools <TOOLS>'"),
    ]:
        with pytest.raises(ValueError) as e:
            exemplar.Solver(index=tiny_index, traces=tmp_path / "t.jsonl", **kwargs)
        assert message in str(e.value)
        cli = subprocess.run([binary("solve"), "--serve", "--index", str(tiny_index)]
                             + [f"--{k.replace('_', '-')}={v}" for k, v in kwargs.items()],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert cli.returncode != 0 and message in cli.stderr, cli.stderr
    with pytest.raises(TypeError, match="unexpected keyword argument 'input'"):
        exemplar.Solver(index=tiny_index, input="problems.csv")
    with pytest.raises(TypeError, match="unexpected keyword argument 'sample'"):
        exemplar.Solver(index=tiny_index, sample=3)


def test_submission_parquet(tiny_index, server, tmp_path):
    """`solve --out submission.parquet` writes what the AIMO 3 gateway reads."""
    pl = pytest.importorskip("polars")
    problems = tmp_path / "test.csv"
    problems.write_text("id,problem\n" + "".join(f"p{i},{problem(i)}\n" for i in (1, 2)))
    out = tmp_path / "submission.parquet"
    subprocess.run([binary("solve"), "--input", str(problems), "--index", str(tiny_index),
                    "--endpoint", server.url, "--model", "scripted", "--samples", "1",
                    "--out", str(out), "--quiet"], check=True, capture_output=True)
    df = pl.read_parquet(out)
    assert df.schema == {"id": pl.String, "answer": pl.Int64}
    assert df.to_dicts() == [{"id": "p1", "answer": 11}, {"id": "p2", "answer": 22}]
