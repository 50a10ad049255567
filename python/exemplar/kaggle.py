"""The AIMO evaluation gateway's ``predict``, backed by an ``exemplar.Solver``.

The gateway (``kaggle_evaluation.aimo_3_inference_server.AIMO3InferenceServer(predict)``)
calls ``predict`` once per problem and wants a one-row frame ``id, answer`` back. It hands the
problem over either as one frame with ``id`` and ``problem`` columns, or as two one-value
series (or one-column frames) ``id_`` and ``problem``; polars or pandas. The answer comes
back in the library it came in.
"""

import logging

__all__ = ["predict"]

log = logging.getLogger("exemplar")


def predict(solver, fallback=None):
    """The ``predict(...)`` function to give the gateway.

    Every problem is answered: if ``solver.solve`` raises (the server died, the traces cannot
    be written), the error is logged and ``fallback`` (default: the solver's ``fallback=``)
    is answered, since one exception would otherwise end the whole submission.
    """

    def predict_fn(*frames, **named):
        frames = frames + tuple(v for k, v in named.items() if k != "answer")
        ids, problems, lib = _problems(frames)
        answers = []
        for id_, problem in zip(ids, problems):
            try:
                answers.append(int(solver.solve(str(id_), str(problem))))
            except Exception:
                answer = solver.fallback if fallback is None else fallback
                log.exception("problem %s: no answer; answering %s", id_, answer)
                answers.append(int(answer))
        return _frame(lib, ids, answers)

    return predict_fn


def _library(obj):
    """'polars' or 'pandas', by the type's module."""
    root = type(obj).__module__.split(".")[0]
    if root not in ("polars", "pandas"):
        raise TypeError(f"predict: expected a polars or pandas frame, got {type(obj).__name__}")
    return root


def _values(obj, name):
    """The values of a series, a one-column frame, or the column ``name`` of a frame."""
    columns = getattr(obj, "columns", None)
    if columns is not None:
        columns = list(columns)
        col = name if name in columns else (columns[0] if len(columns) == 1 else None)
        if col is None:
            raise ValueError(f"predict: no {name!r} column in {columns}")
        obj = obj[col]
    return list(obj.to_list() if hasattr(obj, "to_list") else obj.tolist())


def _problems(frames):
    if len(frames) == 1:
        (frame,) = frames
        lib = _library(frame)
        return _values(frame, "id"), _values(frame, "problem"), lib
    if len(frames) == 2:
        lib = _library(frames[0])
        ids, problems = _values(frames[0], "id"), _values(frames[1], "problem")
        if len(ids) != len(problems):
            raise ValueError(f"predict: {len(ids)} ids for {len(problems)} problems")
        return ids, problems, lib
    raise TypeError(f"predict: expected a frame (id, problem) or id_ and problem, got {len(frames)}")


def _frame(lib, ids, answers):
    if lib == "polars":
        import polars as pl

        return pl.DataFrame(
            {"id": [str(i) for i in ids], "answer": answers},
            schema={"id": pl.String, "answer": pl.Int64},
        )
    import pandas as pd

    return pd.DataFrame(
        {"id": [str(i) for i in ids], "answer": pd.Series(answers, dtype="int64")}
    )
