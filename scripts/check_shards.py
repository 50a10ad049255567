#!/usr/bin/env python3
"""Check an `embed extract` output folder with pyarrow, as a downstream user would read it:
every shard opens, has the documented schema (id: string, embedding: fixed_size_list<float>[dim],
then the passed-through columns), the ids are unique across shards, the row counts match
manifest.json, and the vectors are finite and unit length when the recipe normalises.
Prints a one-line summary; exits non-zero with the reason otherwise.

  .cache/venv/bin/python scripts/check_shards.py embeddings/train
"""
import json
import math
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def fail(msg):
    print(f"check_shards: {msg}", file=sys.stderr)
    sys.exit(1)


def main(folder):
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    n, dim = manifest["shards"], manifest["dim"]
    seen = set()
    for k in range(n):
        path = folder / f"shard-{k:05d}-of-{n:05d}.parquet"
        table = pq.read_table(path)
        schema = table.schema
        if schema.field("id").type != pa.string():
            fail(f"{path}: id is {schema.field('id').type}")
        emb_type = schema.field("embedding").type
        if not (pa.types.is_fixed_size_list(emb_type) and emb_type.list_size == dim
                and emb_type.value_type == pa.float32()):
            fail(f"{path}: embedding is {emb_type}, expected fixed_size_list<float>[{dim}]")
        names = [c["name"] for c in manifest["columns"]]
        if schema.names[2:] != names:
            fail(f"{path}: columns {schema.names[2:]} != manifest {names}")
        if table.num_rows != manifest["rows_per_shard"][k]:
            fail(f"{path}: {table.num_rows} rows, manifest says {manifest['rows_per_shard'][k]}")
        for i in table.column("id").to_pylist():
            if i in seen:
                fail(f"{path}: id {i!r} appears twice")
            seen.add(i)
        values = table.column("embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
        for r in range(table.num_rows):
            row = values[r * dim:(r + 1) * dim]
            norm = math.sqrt(float((row * row).sum()))
            if not math.isfinite(norm) or (manifest["recipe"]["normalize"] and abs(norm - 1) > 1e-3):
                fail(f"{path}: row {r} has norm {norm}")
    if len(seen) != manifest["rows"]:
        fail(f"{len(seen)} ids in shards, manifest says {manifest['rows']}")
    print(f"ok: {n} shards, {len(seen)} rows, dim {dim}, pyarrow {pa.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: check_shards.py EMBEDDINGS_DIR")
    main(sys.argv[1])
