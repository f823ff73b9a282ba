"""`yt8m-engine infer` and `merge`: TFRecords -> ONNX Runtime -> Kaggle CSV, on the pipeline of
pipeline.py (one process) or on Ray Data (ray_infer.py).

Output is written atomically; the order of everything written is total, so the same inputs give a
byte-identical CSV whatever the threads and chunks, and `--shard i/n` partial rankings merged by
`yt8m-engine merge` equal a single run.
"""
from __future__ import annotations

import hashlib
import os
import time

from .errors import Yt8mError
from .io.files import check_output, resolve_files
from .pipeline import Options, Stats, run_files
from .rank.keys import check_files
from .rank.partial import Partial, merge_partials
from .results import MergeResult


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    if not shard:
        return None
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        raise Yt8mError(f"--shard must look like i/n (e.g. 0/4), got {shard!r}") from None
    if not (n >= 1 and 0 <= i < n):
        raise Yt8mError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def infer(model_path: str, input_data_pattern: str, output_file: str | None = None, *,
          shard: str | None = None, engine: str = "local", address: str | None = None, progress: bool = True,
          **options) -> Stats:
    """Run inference; write the submission (or a partial ranking with --shard). Returns Stats.

    engine 'local': this process; 'ray': Ray Data over a local or remote cluster (see ray_infer.py).
    """
    t_wall = time.perf_counter()
    opts = Options(**options).validate()
    sh = parse_shard(shard)
    all_files = resolve_files(input_data_pattern)
    check_files(len(all_files))
    if output_file:
        check_output(output_file, all_files)
    work = [(i, f) for i, f in enumerate(all_files) if sh is None or i % sh[1] == sh[0]]
    if engine == "ray":
        from .ray_infer import ray_infer

        stats, partial = ray_infer(model_path, work, len(all_files), opts, address=address)
    elif engine == "local":
        stats, partial = run_files(model_path, work, len(all_files), opts, progress=progress)
    else:
        raise Yt8mError(f"unknown --engine {engine!r}: use local or ray")
    t0 = time.perf_counter()
    stats.duplicate_ids, stats.duplicate_example = partial.ids.duplicates()
    if output_file:
        if sh is not None:
            partial.fingerprint = fingerprint(model_path, all_files, opts)
            partial.shard = sh
            partial.save(output_file)
        else:
            partial.write_csv(output_file)
    stats.stage["write"] += time.perf_counter() - t0
    stats.wall = time.perf_counter() - t_wall
    return stats


def fingerprint(model_path: str, files: list[str], opts: Options) -> dict:
    """What a partial ranking was made from, so that merge refuses a mixture: the model file's bytes,
    the names of the input files (all shards', in order) and the options that change the ranking."""
    h = hashlib.sha256()
    with open(model_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    names = hashlib.sha256("\n".join(os.path.basename(f) for f in files).encode()).hexdigest()[:16]
    mode = (f"segments, {opts.segment_mode} mode, top_k {opts.top_k}" if opts.segment_labels
            else f"videos, top_k {opts.top_k}")
    return {"model": h.hexdigest()[:16], "files": f"{len(files)} files {names}", "options": mode}


def merge(partials: list[str], output_file: str, segment_max_pred: int | None = None) -> dict:
    """Combine `infer --shard` partial rankings into the final CSV (identical to a single run)."""
    if not partials:
        raise Yt8mError("merge needs at least one partial ranking")
    check_output(output_file, partials)
    merged = merge_partials([Partial.load(p) for p in partials], partials, segment_max_pred)
    dup, example = merged.ids.duplicates()
    merged.write_csv(output_file)
    return MergeResult(output=output_file, partials=len(partials), bytes=os.path.getsize(output_file),
                       duplicate_ids=dup, duplicate_example=example)
