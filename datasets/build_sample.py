#!/usr/bin/env python3
"""Build exemplar's bundled sample corpus (or the full local corpus) from the
shared, normalised math datasets.

Only MIT-licensed sources are used: MATH (Hendrycks et al., 2021) and GSM8K
(Cobbe et al., 2021).  The MAA-copyrighted AIME/AMC folders are never copied;
they are only read to *exclude* MATH problems that reproduce them (see
`competition_overlap_ids`).

Usage (from the repository root):

    python3 datasets/build_sample.py                 # -> datasets/sample/
    python3 datasets/build_sample.py --full          # -> datasets/full/ (gitignored)
    python3 datasets/build_sample.py --verify-only   # re-check datasets/sample/ without the source
    python3 datasets/build_sample.py --source /path/to/shared/datasets

Selection is deterministic: every candidate gets the key
sha256("exemplar-sample-v1:" + id); within each stratum the candidates with the
smallest keys are taken.  No random numbers, no dependence on file order.

Python 3.11+, standard library only.
"""

from __future__ import annotations

import argparse
import collections
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "datasets"
SAMPLE_DIR = REPO_ROOT / "datasets" / "sample"
FULL_DIR = REPO_ROOT / "datasets" / "full"

HASH_SALT = "exemplar-sample-v1:"
SCHEMA_KEYS = ["id", "problem", "solution", "answer", "answer_int", "source", "subject", "level", "meta"]
CSV_COLUMNS = ["id", "problem", "answer"]

# Competition folders that are read only to filter overlaps out of MATH.
COMPETITION_FOLDERS = ["aime_1983_2024", "amc23"]
SHINGLE_WORDS = 6            # word n-gram length for the fuzzy overlap test
SHINGLE_CONTAINMENT = 0.6    # shared shingles / shingles of the shorter text
EDGE_CHARS = 60              # exact match of the first or last N normalised chars


# --------------------------------------------------------------------------- helpers

def selection_key(record_id: str) -> str:
    return hashlib.sha256((HASH_SALT + record_id).encode("utf-8")).hexdigest()


def natural_key(record_id: str) -> list:
    """Sort "math/train/algebra/2" before "math/train/algebra/10"."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", record_id) if part != ""]


def normalise_text(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def word_shingles(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    n = SHINGLE_WORDS
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def load_jsonl(path: Path) -> list[dict]:
    records = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SystemExit(f"{path}:{line_no}: invalid JSON: {err}")
    return records


def dump_line(record: dict) -> str:
    # ensure_ascii=False keeps LaTeX/unicode readable; the three characters
    # below are legal in JSON strings but are treated as line breaks by some
    # readers (e.g. Python's str.splitlines), so they are written escaped.
    text = json.dumps(record, ensure_ascii=False)
    for ch in ("\u2028", "\u2029", "\u0085"):
        text = text.replace(ch, "\\u%04x" % ord(ch))
    return text


def atomic_path(path: Path) -> Path:
    """Temporary sibling; the caller renames it over `path` when complete, so an
    interrupted run never leaves a truncated file that looks whole."""
    return path.with_name(path.name + ".tmp")


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = atomic_path(path)
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(dump_line(record))
            handle.write("\n")
    tmp.replace(path)


def csv_answer(record: dict) -> str:
    # Test problems all have an integer answer; the CSV carries it in plain
    # decimal (the JSONL keeps the original LaTeX string, e.g. "14,\!400").
    return str(record["answer_int"])


def write_csv(path: Path, records: list[dict]) -> None:
    tmp = atomic_path(path)
    with tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for record in records:
            writer.writerow([record["id"], record["problem"], csv_answer(record)])
    tmp.replace(path)


def allocate(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Split `total` over strata proportionally to `sizes` (largest remainder)."""
    pool = sum(sizes.values())
    if total >= pool:
        return dict(sizes)
    quotas, remainders = {}, []
    for name, size in sizes.items():
        exact = total * size / pool
        quotas[name] = int(exact)
        remainders.append((-(exact - int(exact)), name))
    left = total - sum(quotas.values())
    for _, name in sorted(remainders):
        if left == 0:
            break
        if quotas[name] < sizes[name]:
            quotas[name] += 1
            left -= 1
    return quotas


def pick(records: list[dict], count: int) -> list[dict]:
    return sorted(records, key=lambda r: (selection_key(r["id"]), r["id"]))[:count]


def stratified_pick(records: list[dict], total: int, stratum) -> list[dict]:
    groups: dict[str, list[dict]] = collections.defaultdict(list)
    for record in records:
        groups[stratum(record)].append(record)
    quotas = allocate(total, {name: len(group) for name, group in sorted(groups.items())})
    chosen = []
    for name in sorted(groups):
        chosen.extend(pick(groups[name], quotas[name]))
    return chosen


def ordered(records: list[dict]) -> list[dict]:
    source_rank = {"math": 0, "gsm8k": 1}
    return sorted(records, key=lambda r: (source_rank.get(r["source"], 9), natural_key(r["id"])))


# --------------------------------------------------------------------------- filters

def competition_overlap_ids(math: list[dict], source_root: Path) -> dict[str, str]:
    """MATH problems that reproduce a problem from the AIME/AMC folders.

    A MATH problem is flagged when its normalised text equals a competition
    problem, shares its first or last EDGE_CHARS normalised characters, or
    when at least SHINGLE_CONTAINMENT of the word 6-grams of the shorter of
    the two texts also occur in the other.  Returns {math id: competition id}.
    """
    comp = []
    for folder in COMPETITION_FOLDERS:
        path = source_root / folder / "problems.jsonl"
        if not path.is_file():
            raise SystemExit(f"missing {path}: needed to filter AIME/AMC problems out of MATH "
                             f"(pass --keep-competition-overlap to skip the filter)")
        comp.extend(load_jsonl(path))

    exact, heads, tails = {}, {}, {}
    shingles = []
    index: dict[tuple, set[int]] = collections.defaultdict(set)
    for i, record in enumerate(comp):
        norm = normalise_text(record["problem"])
        exact[norm] = record["id"]
        if len(norm) >= EDGE_CHARS:
            heads[norm[:EDGE_CHARS]] = record["id"]
            tails[norm[-EDGE_CHARS:]] = record["id"]
        grams = word_shingles(record["problem"])
        shingles.append(grams)
        for gram in grams:
            index[gram].add(i)

    flagged = {}
    for record in math:
        norm = normalise_text(record["problem"])
        hit = exact.get(norm) or heads.get(norm[:EDGE_CHARS]) or tails.get(norm[-EDGE_CHARS:])
        if hit is None:
            grams = word_shingles(record["problem"])
            counts = collections.Counter(i for gram in grams for i in index.get(gram, ()))
            for i, shared in sorted(counts.items()):
                if shared / max(1, min(len(grams), len(shingles[i]))) >= SHINGLE_CONTAINMENT:
                    hit = comp[i]["id"]
                    break
        if hit is not None:
            flagged[record["id"]] = hit
    return flagged


# --------------------------------------------------------------------------- build

def build(args) -> tuple[list[dict], list[dict], list[str]]:
    source = Path(args.source).resolve()
    notes: list[str] = []
    math = load_jsonl(source / "math" / "problems.jsonl")
    gsm8k = load_jsonl(source / "gsm8k" / "problems.jsonl")

    math500_ids = {r["id"] for r in math if r["meta"].get("math500") is True}
    math500_texts = {normalise_text(r["problem"]) for r in math if r["id"] in math500_ids}

    math_train = [r for r in math if r["meta"].get("split") == "train"]
    math_test_int = [r for r in math if r["meta"].get("split") == "test" and r["answer_int"] is not None]
    gsm_train = [r for r in gsm8k if r["meta"].get("split") == "train"]
    notes.append(f"source: MATH train {len(math_train)}, MATH test with integer answer {len(math_test_int)}, "
                 f"GSM8K train {len(gsm_train)}")

    # MATH-500 must never be retrievable: drop by id and by (normalised) text.
    before = len(math_train)
    math_train = [r for r in math_train
                  if r["id"] not in math500_ids and normalise_text(r["problem"]) not in math500_texts]
    notes.append(f"dropped {before - len(math_train)} MATH train problem(s) identical to a MATH-500 problem")

    if not args.full:
        # Problems without a solution or answer are useless as few-shot examples.
        before = len(math_train)
        math_train = [r for r in math_train if r["solution"].strip() and r["answer"].strip()]
        notes.append(f"dropped {before - len(math_train)} MATH train problem(s) with empty solution/answer")

        if not args.keep_competition_overlap:
            flagged = competition_overlap_ids(math_train + math_test_int, source)
            before_train, before_test = len(math_train), len(math_test_int)
            math_train = [r for r in math_train if r["id"] not in flagged]
            math_test_int = [r for r in math_test_int if r["id"] not in flagged]
            notes.append(f"dropped {before_train - len(math_train)} MATH train and "
                         f"{before_test - len(math_test_int)} MATH test candidates that reproduce "
                         f"AIME/AMC problems")

    # Train and test must be disjoint in text, not only in id (MATH repeats a
    # few problems across its splits): drop train candidates that repeat any
    # test candidate, before sampling, so the sample sizes stay exact.
    test_pool_texts = {normalise_text(r["problem"]) for r in math_test_int}
    before = len(math_train)
    math_train = [r for r in math_train if normalise_text(r["problem"]) not in test_pool_texts]
    notes.append(f"dropped {before - len(math_train)} MATH train problem(s) that repeat an "
                 f"integer-answer MATH test problem")

    if not args.full:
        test = stratified_pick(math_test_int, args.test, lambda r: r["subject"])
        train_math = stratified_pick(math_train, args.train_math, lambda r: r["subject"])
        train_gsm = pick(gsm_train, args.train_gsm8k)
    else:
        test = math_test_int
        train_math = math_train
        train_gsm = gsm_train

    return ordered(train_math + train_gsm), ordered(test), notes


# --------------------------------------------------------------------------- verify

def verify(out_dir: Path, source: Path | None) -> list[str]:
    """Return a list of problems found in out_dir (empty list = all good)."""
    errors: list[str] = []
    data = {}
    for name in ("train.jsonl", "test.jsonl"):
        path = out_dir / name
        records = []
        with path.open(encoding="utf-8", newline="") as handle:
            raw = handle.read()
        if not raw.endswith("\n"):
            errors.append(f"{name}: no trailing newline")
        for line_no, line in enumerate(raw.split("\n")[:-1], 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                errors.append(f"{name}:{line_no}: invalid JSON ({err})")
                continue
            if list(record) != SCHEMA_KEYS:
                errors.append(f"{name}:{line_no}: keys {list(record)} != {SCHEMA_KEYS}")
            if not isinstance(record.get("problem"), str) or not record["problem"].strip():
                errors.append(f"{name}:{line_no}: empty problem")
            if not isinstance(record.get("meta"), dict):
                errors.append(f"{name}:{line_no}: meta is not an object")
            records.append(record)
        ids = [r.get("id") for r in records]
        dupes = [i for i, n in collections.Counter(ids).items() if n > 1]
        if dupes:
            errors.append(f"{name}: duplicate ids {dupes[:5]}")
        data[name] = records

    train, test = data["train.jsonl"], data["test.jsonl"]
    train_ids, test_ids = {r["id"] for r in train}, {r["id"] for r in test}
    if train_ids & test_ids:
        errors.append(f"train/test share ids: {sorted(train_ids & test_ids)[:5]}")
    test_texts = {normalise_text(r["problem"]) for r in test}
    shared_text = [r["id"] for r in train if normalise_text(r["problem"]) in test_texts]
    if shared_text:
        errors.append(f"train problems with the same text as a test problem: {shared_text[:5]}")
    in_m500 = [r["id"] for r in train if r["source"] == "math" and r["meta"].get("math500") is not False]
    if in_m500:
        errors.append(f"MATH-500 (or unflagged MATH) problems in train: {in_m500[:5]}")
    bad_test = [r["id"] for r in test if r["source"] != "math" or r["meta"].get("split") != "test"
                or not isinstance(r["answer_int"], int)]
    if bad_test:
        errors.append(f"test problems that are not MATH test with an integer answer: {bad_test[:5]}")
    bad_source = [r["id"] for r in train + test if r["source"] not in ("math", "gsm8k")]
    if bad_source:
        errors.append(f"records from sources other than MATH/GSM8K: {bad_source[:5]}")
    bad_split = [r["id"] for r in train if r["meta"].get("split") != "train"]
    if bad_split:
        errors.append(f"train records not from a train split: {bad_split[:5]}")

    with (out_dir / "test.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0] != CSV_COLUMNS:
        errors.append(f"test.csv: header {rows[:1]} != {CSV_COLUMNS}")
    expected = [[r["id"], r["problem"], csv_answer(r)] for r in test]
    if rows[1:] != expected:
        errors.append("test.csv does not match test.jsonl (id, problem, answer_int)")

    if source is not None:
        # Records must be byte-for-byte the source records (modulo escaping).
        wanted = train_ids | test_ids
        originals = {}
        for folder in ("math", "gsm8k"):
            for record in load_jsonl(source / folder / "problems.jsonl"):
                if record["id"] in wanted:
                    originals[record["id"]] = record
        math500_texts = {normalise_text(r["problem"]) for r in load_jsonl(source / "math" / "problems.jsonl")
                         if r["meta"].get("math500") is True}
        for record in train + test:
            if originals.get(record["id"]) != record:
                errors.append(f"{record['id']}: differs from the source record")
        leaked = [r["id"] for r in train if normalise_text(r["problem"]) in math500_texts]
        if leaked:
            errors.append(f"train problems with the same text as a MATH-500 problem: {leaked[:5]}")
    return errors


# --------------------------------------------------------------------------- report

def counts_table(train: list[dict], test: list[dict]) -> str:
    rows = collections.Counter()
    for split, records in (("train", train), ("test", test)):
        for r in records:
            rows[(r["source"], r["subject"] or "-", split)] += 1
    keys = sorted({(s, subj) for s, subj, _ in rows}, key=lambda k: ({"math": 0, "gsm8k": 1}.get(k[0], 9), k[1]))
    out = io.StringIO()
    out.write("| source | subject | train | test |\n|---|---|---:|---:|\n")
    totals = collections.Counter()
    for source, subject in keys:
        tr, te = rows[(source, subject, "train")], rows[(source, subject, "test")]
        totals[(source, "train")] += tr
        totals[(source, "test")] += te
        out.write(f"| {source} | {subject} | {tr} | {te} |\n")
    for source in sorted({k[0] for k in keys}, key=lambda s: {"math": 0, "gsm8k": 1}.get(s, 9)):
        out.write(f"| **{source}** | **all** | **{totals[(source, 'train')]}** | **{totals[(source, 'test')]}** |\n")
    out.write(f"| **total** | | **{len(train)}** | **{len(test)}** |\n")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(DEFAULT_SOURCE),
                        help="shared datasets root containing math/ and gsm8k/ (default: %(default)s)")
    parser.add_argument("--full", action="store_true",
                        help="write all MATH train + GSM8K train and all integer-answer MATH test to datasets/full/")
    parser.add_argument("--out", help="output directory (default: datasets/sample or datasets/full)")
    parser.add_argument("--train-math", type=int, default=2000, help="MATH train problems in the sample")
    parser.add_argument("--train-gsm8k", type=int, default=500, help="GSM8K train problems in the sample")
    parser.add_argument("--test", type=int, default=100, help="MATH test problems in the sample")
    parser.add_argument("--keep-competition-overlap", action="store_true",
                        help="sample mode: do not drop MATH problems that reproduce AIME/AMC problems")
    parser.add_argument("--verify-only", action="store_true",
                        help="only validate an existing output directory (source not needed)")
    parser.add_argument("--markdown", action="store_true", help="also print the counts as a Markdown table")
    args = parser.parse_args(argv)

    out_dir = Path(args.out) if args.out else (FULL_DIR if args.full else SAMPLE_DIR)

    if args.verify_only:
        source = Path(args.source) if (Path(args.source) / "math" / "problems.jsonl").is_file() else None
        errors = verify(out_dir, source)
        if errors:
            print("VALIDATION FAILED:", file=sys.stderr)
            for error in errors:
                print("  " + error, file=sys.stderr)
            return 1
        train = load_jsonl(out_dir / "train.jsonl")
        test = load_jsonl(out_dir / "test.jsonl")
    else:
        source = Path(args.source)
        for folder in ("math", "gsm8k"):
            if not (source / folder / "problems.jsonl").is_file():
                parser.error(f"{source / folder / 'problems.jsonl'} not found (use --source)")
        train, test, notes = build(args)
        for note in notes:
            print(note)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(out_dir / "train.jsonl", train)
        write_jsonl(out_dir / "test.jsonl", test)
        write_csv(out_dir / "test.csv", test)

    print(f"\n{out_dir}:")
    table = counts_table(train, test)
    for line in table.splitlines()[2:]:
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        print(f"  {cells[0]:<8} {cells[1]:<24} train {cells[2]:>6}  test {cells[3]:>5}")
    for name in ("train.jsonl", "test.jsonl", "test.csv"):
        print(f"  {name:<12} {(out_dir / name).stat().st_size:>12,} bytes")
    if args.markdown:
        print()
        print(table, end="")

    errors = verify(out_dir, source)
    if errors:
        print("\nVALIDATION FAILED:", file=sys.stderr)
        for error in errors:
            print("  " + error, file=sys.stderr)
        return 1
    checked = "with" if source is not None else "without"
    print(f"\nvalidation passed ({checked} source comparison): JSON lines parse, schema keys in order, ids unique, "
          f"no empty problem, train/test disjoint by id and text, no MATH-500 in train, CSV matches JSONL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
