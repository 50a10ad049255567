"""A fake AIMO gateway: one problem at a time, as polars and as pandas frames."""

import pandas as pd
import polars as pl

import exemplar
from conftest import problem


class FakeSolver:
    """Stands in for a Solver where the frames, not the solving, are under test."""

    fallback = 7

    def __init__(self):
        self.calls = []

    def solve(self, id_, text):
        self.calls.append(id_)
        if "explode" in text:
            raise RuntimeError("the server went away")
        return 11 * int(text.split("Problem number ")[1].split(":")[0])


def gateway(predict, make_frames, n):
    """Call predict once per problem, like the gateway, and check each reply."""
    for i in range(1, n + 1):
        reply = predict(*make_frames(f"p{i}", problem(i)))
        yield reply


def test_polars_frames():
    s = FakeSolver()
    predict = exemplar.kaggle.predict(s)
    one_frame = lambda i, p: (pl.DataFrame({"id": [i], "problem": [p]}),)
    two_series = lambda i, p: (pl.Series("id", [i]), pl.Series("problem", [p]))
    for make in (one_frame, two_series):
        for i, reply in enumerate(gateway(predict, make, 3), start=1):
            assert isinstance(reply, pl.DataFrame)
            assert reply.schema == {"id": pl.String, "answer": pl.Int64}
            assert reply.to_dicts() == [{"id": f"p{i}", "answer": 11 * i}]
    assert s.calls == ["p1", "p2", "p3"] * 2


def test_pandas_frames():
    s = FakeSolver()
    predict = exemplar.kaggle.predict(s)
    one_frame = lambda i, p: (pd.DataFrame({"id": [i], "problem": [p]}),)
    two_frames = lambda i, p: (pd.DataFrame({"id": [i]}), pd.DataFrame({"problem": [p]}))
    for make in (one_frame, two_frames):
        for i, reply in enumerate(gateway(predict, make, 3), start=1):
            assert isinstance(reply, pd.DataFrame)
            assert list(reply.columns) == ["id", "answer"] and str(reply["answer"].dtype) == "int64"
            assert reply.to_dict("records") == [{"id": f"p{i}", "answer": 11 * i}]


def test_an_error_answers_the_fallback():
    predict = exemplar.kaggle.predict(FakeSolver())
    reply = predict(pl.DataFrame({"id": ["x"], "problem": ["explode"]}))
    assert reply.to_dicts() == [{"id": "x", "answer": 7}]


def test_a_real_solver_behind_the_gateway(tiny_index, server, tmp_path):
    with exemplar.Solver(index=tiny_index, endpoint=server.url, model="scripted", samples=1,
                         traces=tmp_path / "traces.jsonl") as s:
        predict = exemplar.kaggle.predict(s)
        for i in (4, 5):
            reply = predict(pl.DataFrame({"id": [f"q{i}"], "problem": [problem(i)]}))
            assert reply.to_dicts() == [{"id": f"q{i}", "answer": 11 * i}]
