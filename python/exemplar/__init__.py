"""exemplar from Python: the Rust toolkit's encoder, index and solver (see docs/python.md).

- ``Encoder(model, device="cpu", dtype=None, **options)``: texts to float32 vectors, as
  ``embed encode`` makes them.
- ``Index.open(path, model=None)``: search an ``embed index build`` index by text or vectors.
- ``Solver(index=..., endpoint=..., model=..., **options)``: ``solve``'s per-problem loop,
  one ``solve(id, problem)`` call per problem.
- ``exemplar.kaggle.predict(solver)``: the function the AIMO evaluation gateway calls.

Work runs without the GIL. Progress goes to the ``logging`` logger "exemplar" (INFO).
"""

import logging

from ._exemplar import Encoder, Hit, Index, Solver, __version__
from . import kaggle

# A library logs; the application decides where it goes.
logging.getLogger("exemplar").addHandler(logging.NullHandler())

__all__ = ["Encoder", "Hit", "Index", "Solver", "kaggle", "__version__"]
