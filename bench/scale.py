"""Query cost at 10k, 100k and 1M instances, on SQLite and PostgreSQL (issue #13 "Scale").

    python bench/scale.py                                  # SQLite, 10k and 100k
    python bench/scale.py --db sqlite,postgres --sizes 10000,100000,1000000 --json scale.json
    python bench/scale.py --db postgres --sizes 10000 --plans

For each backend and size: fills a fresh index with a seeded synthetic hospital
(`scale_corpus.py`: the ingest code's rows, no blobs), then times the queries QIDO-RS
and C-FIND run, through `Archive._find` (compile_query, the paged SELECT and the
matches' attributes and statistics: `Archive.find` without its permission check and
audit row, whose cost does not depend on the index size), parameters parsed by the
QIDO-RS door's own `parse_qido`. Prints a table (median and 90th percentile, ms) with
the targets of issue #13 and writes every number as JSON. PostgreSQL is a throwaway
cluster (`tests/postgres_cluster.py`: fsync off, 64 MB shared buffers), ANALYZEd after
the fill as autovacuum would; SQLite is left without statistics, as minipacs leaves it.
Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import scale_corpus  # noqa: E402

from minipacs.archive import Archive  # noqa: E402
from minipacs.config import Settings  # noqa: E402
from minipacs.dicom.names import fold_text  # noqa: E402
from minipacs.index.database import create_index_engine  # noqa: E402
from minipacs.index.query import compile_query  # noqa: E402
from minipacs.index.schema import upgrade  # noqa: E402
from minipacs.node import open_archive  # noqa: E402
from minipacs.web.query_params import parse_qido  # noqa: E402

PAGE = 26  # the viewer's study list: PAGE_SIZE 25, plus one to know a next page exists


@dataclass(frozen=True)
class QueryKind:
    name: str
    target_ms: float
    queries: Callable[[Engine, random.Random], list[list[tuple[str, str]]]]


def _sample(engine: Engine, sql: str, count: int) -> list[Any]:
    with engine.connect() as connection:
        rows = list(connection.execute(text(sql)).all())
    random.Random(1).shuffle(rows)
    return rows[:count]


def _by_patient_id(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    rows = _sample(engine, "SELECT patient_id FROM patients", 50)
    return [[("PatientID", r[0])] for r in rows]


def _by_accession(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    rows = _sample(engine, "SELECT accession_number FROM studies", 50)
    return [[("AccessionNumber", r[0])] for r in rows]


def _by_study_uid(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    rows = _sample(engine, "SELECT study_instance_uid FROM studies", 50)
    return [[("StudyInstanceUID", r[0])] for r in rows]


def _names(engine: Engine) -> list[tuple[str, str, str]]:
    """(family, middle, given) of sampled patients."""
    rows = _sample(engine, "SELECT patient_name FROM patients", 50)
    out = []
    for (name,) in rows:
        family, _, rest = name.partition("^")
        middle, _, given = rest.partition(" ")
        out.append((family, middle, given))
    return out


def _name_prefix(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    # "Nguyễn^Thị H*": the family name, middle name and a given name's first letter
    # (case-insensitive, diacritics kept: PS3.4 C.2.2.2.1 PN matching).
    return [[("PatientName", f"{f.lower()}^{m} {g[:1]}*"), ("limit", "100")]
            for f, m, g in _names(engine)]


def _name_folded(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    # What the viewer sends for "nguyen thi h" typed without accents.
    return [[("PatientName", fold_text(f"{f} {m} {g[:1]}") + "*"),
             ("fuzzymatching", "true"), ("limit", "100")] for f, m, g in _names(engine)]


def _given_folded(engine: Engine, _: random.Random) -> list[list[tuple[str, str]]]:
    # A given name alone, without accents: fuzzy matching from any name component.
    return [[("PatientName", fold_text(g) + "*"), ("fuzzymatching", "true"),
             ("limit", "100")] for _f, _m, g in _names(engine)]


def _date_page(_engine: Engine, rng: random.Random) -> list[list[tuple[str, str]]]:
    # The viewer's study list: a month, newest first, one page (+1), fuzzymatching on.
    out = []
    for _ in range(50):
        year, month = rng.randint(2016, 2025), rng.randint(1, 12)
        out.append([("StudyDate", f"{year}{month:02d}01-{year}{month:02d}31"),
                    ("fuzzymatching", "true"), ("limit", str(PAGE))])
    return out


KINDS = [
    QueryKind("PatientID", 10, _by_patient_id),
    QueryKind("AccessionNumber", 10, _by_accession),
    QueryKind("StudyInstanceUID", 10, _by_study_uid),
    QueryKind("name prefix, limit=100", 50, _name_prefix),
    QueryKind("accent-free name, limit=100", 50, _name_folded),
    QueryKind("accent-free given name, limit=100", 50, _given_folded),
    QueryKind(f"date range page, limit={PAGE}", 50, _date_page),
]


def _progress(label: str, total: int) -> Callable[[int], None]:
    start = time.monotonic()

    def show(done: int) -> None:
        elapsed = time.monotonic() - start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done}/{total} {rate:,.0f}/s eta {eta:,.0f} s   ")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {t: int(connection.execute(text(f"SELECT count(*) FROM {t}")).scalar_one())
                for t in ("patients", "studies", "series", "instances")}


def _analyze(engine: Engine) -> None:
    """PostgreSQL's statistics, as autovacuum would gather them after a bulk load.
    SQLite is left as minipacs leaves it (nothing runs ANALYZE there)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(
                text("ANALYZE"))


def _time_queries(archive: Archive, engine: Engine, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for kind in KINDS:
        queries = [parse_qido(items) for items in kind.queries(engine, random.Random(7))]
        for query in queries[:3]:  # warm the caches the first queries fill
            archive._find("STUDY", query.filter, include=query.include,
                          limit=query.limit, offset=query.offset)
        times, found = [], []
        for i in range(repeat):
            query = queries[i % len(queries)]
            start = time.perf_counter()
            result = archive._find("STUDY", query.filter, include=query.include,
                                   limit=query.limit, offset=query.offset)
            times.append((time.perf_counter() - start) * 1000)
            found.append(len(result.matches))
        times.sort()
        median = statistics.median(times)
        results[kind.name] = {
            "median_ms": round(median, 2), "p90_ms": round(times[int(0.9 * len(times))], 2),
            "target_ms": kind.target_ms, "met": median < kind.target_ms,
            "matches_median": statistics.median(found), "repeat": repeat}
    return results


def explain(engine: Engine, statement: Any) -> list[str]:
    """The database's plan of `statement`, with its parameters bound as at run time
    (SQLite: EXPLAIN QUERY PLAN's details; PostgreSQL: EXPLAIN's lines)."""
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(
            ("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + str(compiled), params).all()
    return [str(row[-1]) for row in rows]


def plans(engine: Engine) -> dict[str, list[str]]:
    """The plan of each kind's compiled query (first sampled value), as `_find` runs it."""
    out: dict[str, list[str]] = {}
    for kind in KINDS:
        query = parse_qido(kind.queries(engine, random.Random(7))[0])
        statement = compile_query("STUDY", query.filter).statement
        out[kind.name] = explain(engine, statement.limit((query.limit or 100) + 1))
    return out


def run_size(db: str, size: int, seed: int, repeat: int, work: Path, postgres: Any,
             show_plans: bool) -> dict[str, Any]:
    data_dir = work / f"{db}-{size}"
    url = postgres.create_database(f"scale_{size}") if db == "postgres" else \
        f"sqlite:///{data_dir / 'index.sqlite'}"
    data_dir.mkdir(parents=True, exist_ok=True)
    writer = create_index_engine(url, writer=True)
    upgrade(writer)
    start = time.monotonic()
    written = scale_corpus.fill(writer, size, seed,
                                progress=_progress(f"{db} {size:,}", size))
    fill_s = time.monotonic() - start
    _analyze(writer)
    counts = _counts(writer)
    with writer.connect() as connection:
        size_mb = round(int(connection.execute(text(
            "SELECT pg_database_size(current_database())" if db == "postgres" else
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"))
            .scalar_one()) / 2**20, 1)
    writer.dispose()
    archive = open_archive(Settings(data_dir=data_dir, database_url=url))
    try:
        engine = archive.engine
        queries = _time_queries(archive, engine, repeat)
        plan = plans(engine) if show_plans else {}
    finally:
        archive.close()
    return {"db": db, "instances": written, "fill_s": round(fill_s, 1), "counts": counts,
            "index_mb": size_mb, "queries": queries, "plans": plan}


def _table(runs: list[dict[str, Any]]) -> str:
    header = ["query", "target"] + [f"{r['db']} {r['instances']:,}" for r in runs]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in KINDS:
        cells = [kind.name, f"< {kind.target_ms:g} ms"]
        for r in runs:
            q = r["queries"][kind.name]
            cells.append(f"{q['median_ms']:.1f} ({q['p90_ms']:.1f})"
                         + ("" if q["met"] else " ✗"))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("| fill time | | " + " | ".join(f"{r['fill_s']:.0f} s" for r in runs) + " |")
    lines.append("| patients / studies | | " + " | ".join(
        f"{r['counts']['patients']:,} / {r['counts']['studies']:,}" for r in runs) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--db", default="sqlite",
                        help="sqlite, postgres or both comma-separated (default sqlite)")
    parser.add_argument("--sizes", default="10000,100000",
                        help="instances per index, comma-separated (default 10000,100000)")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    parser.add_argument("--repeat", type=int, default=50,
                        help="timed queries per kind and size (default 50)")
    parser.add_argument("--json", type=Path, default=Path("scale-results.json"),
                        help="where to write the numbers (default scale-results.json)")
    parser.add_argument("--plans", action="store_true",
                        help="also print and record each query kind's plan (EXPLAIN)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the SQLite indexes (default: a temporary one, "
                        "removed afterwards)")
    args = parser.parse_args(argv)
    # Stopped with SIGTERM: unwind, so the PostgreSQL cluster and the work folder go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dbs = [d.strip() for d in args.db.split(",") if d.strip()]
    for db in dbs:
        if db not in ("sqlite", "postgres"):
            parser.error(f"--db {db!r}: expected sqlite or postgres")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="minipacs-scale-"))
    postgres = None
    runs: list[dict[str, Any]] = []
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    try:
        if "postgres" in dbs:
            from postgres_cluster import PostgresCluster
            postgres = PostgresCluster().start()
        for db in dbs:
            for size in sizes:
                run = run_size(db, size, args.seed, args.repeat, work, postgres, args.plans)
                runs.append(run)
                print(_table([run]), flush=True)
                for name, lines in run["plans"].items():
                    print(f"  plan, {name}:\n    " + "\n    ".join(lines))
                args.json.write_text(json.dumps(
                    {"uptime_before": load.strip(), "cpus": os.cpu_count(), "runs": runs},
                    indent=2, ensure_ascii=False))
    finally:
        if postgres is not None:
            postgres.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    after = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    args.json.write_text(json.dumps(
        {"uptime_before": load.strip(), "uptime_after": after.strip(),
         "cpus": os.cpu_count(), "runs": runs}, indent=2, ensure_ascii=False))
    print(_table(runs))
    print(f"load: before {load.strip()}; after {after.strip()}")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
