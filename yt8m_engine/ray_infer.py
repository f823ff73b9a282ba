"""`infer --engine ray`: inference on Ray Data.

Ray (optional: pip install 'yt8m-engine[ray]'): the input files are cut into shards (file index % n),
`ray.data.from_items` carries one shard per block, and `map_batches` runs an actor class that holds
one ONNX Runtime session (one per GPU where there are GPUs) and turns a shard into a partial per-class
top-N with the same pipeline as a single process. The driver merges the partials in a total order,
so the CSV is byte-identical to a single-process run.

Measured pitfalls handled here (Ray 2.60): fractional CPUs per actor (one CPU each silently hangs a
2-core machine), `num_gpus` only where GPUs exist, batch_size=1 over one block per shard (so shards are
never fused into one task), a timeout for actors that cannot start, Ray's session folders in a
temporary directory of ours that is removed afterwards, and an auth token of the run's own (in the
environment) instead of the ~/.ray/auth_token Ray would write.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np

from .errors import Yt8mError


def _ray():
    try:
        import ray
    except ImportError:
        raise Yt8mError("--engine ray needs Ray: pip install 'yt8m-engine[ray]'") from None
    return ray


class _ShardWorker:
    """A Ray Data actor: one ONNX Runtime session, reused for every shard it is given."""

    def __init__(self, model_path: str, num_files: int, opts):
        from .pipeline import open_model

        self.model = open_model(model_path, opts)
        self.num_files = num_files
        self.opts = opts

    def __call__(self, batch: dict) -> dict:
        from .pipeline import run_files

        out_stats, out_parts = [], []
        for files, idx in zip(batch["files"], batch["indices"]):
            work = [(int(i), str(f)) for i, f in zip(idx, files)]
            stats, partial = run_files(self.model, work, self.num_files, self.opts)
            out_parts.append(partial.to_bytes())
            out_stats.append(np.array([stats.videos, stats.segments, stats.bytes, stats.corrupt,
                                       *[stats.stage[k] for k in ("read", "parse", "infer", "rank")]], np.float64))
        return {"partial": np.array(out_parts, dtype=object), "stats": np.stack(out_stats)}


def ray_infer(model_path: str, work: list[tuple[int, str]], num_files: int, opts, address: str | None = None,
              shards: int | None = None, timeout_s: float = 600.0):
    """(Stats, Partial) of the given files, computed by Ray Data actors."""
    ray = _ray()
    from .pipeline import Stats
    from .rank.partial import Partial, merge_partials

    t0 = time.perf_counter()
    tmp = None
    started = False
    saved_env = {}
    if not ray.is_initialized():
        kw = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
        if address:
            ray.init(address=address, **kw)
        else:
            tmp = tempfile.mkdtemp(prefix="yt8m-ray-")
            if not any(k in os.environ for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
                # token auth with a token of this run only: Ray would otherwise write ~/.ray/auth_token
                import secrets

                saved_env["RAY_AUTH_TOKEN"] = None
                os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
            ray.init(num_cpus=os.cpu_count() or 1, _temp_dir=tmp, **kw)
        started = True
    try:
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = float(resources.get("CPU", 1))
        workers = max(1, gpus) if gpus else max(1, min(int(cpus), 4))
        n_shards = max(1, min(len(work), shards or workers * 2))
        items = [{"files": [f for _, f in work[i::n_shards]], "indices": [j for j, _ in work[i::n_shards]]}
                 for i in range(n_shards)]
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.wait_for_min_actors_s = min(timeout_s, 120)  # a pool that cannot start fails instead of hanging
        ctx.enable_progress_bars = False
        import logging

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        ds = ray.data.from_items(items, override_num_blocks=n_shards)
        remote = {"num_cpus": 0.5 if not gpus else 1}
        if gpus:
            remote["num_gpus"] = 1
        else:  # several CPU actors share the cores: one worker thread each
            opts = dataclasses.replace(opts, threads=opts.threads or 1)
        ds = ds.map_batches(_ShardWorker, fn_constructor_args=(model_path, num_files, opts), batch_size=1,
                            compute=ActorPoolStrategy(size=min(workers, n_shards)), batch_format="numpy",
                            **remote)
        parts, rows = [], []
        deadline = time.perf_counter() + timeout_s
        for row in ds.iter_rows():
            if time.perf_counter() > deadline:
                raise Yt8mError(f"--engine ray: no result within {timeout_s:.0f} s (is the cluster short of CPUs?)")
            parts.append(Partial.load(bytes(row["partial"])))
            rows.append(row["stats"])
        provider = "ray: " + (f"{gpus} GPU actor(s)" if gpus else f"{min(workers, n_shards)} CPU actor(s)")
    finally:
        if started:
            ray.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        for k in saved_env:
            os.environ.pop(k, None)
    merged = merge_partials(parts, top_n=opts.segment_max_pred, every_shard=False)
    s = np.sum(rows, axis=0) if rows else np.zeros(8)
    stats = Stats(files=len(work), videos=int(s[0]), segments=int(s[1]), bytes=int(s[2]), corrupt=int(s[3]),
                  provider=provider)
    for k, v in zip(("read", "parse", "infer", "rank"), s[4:]):
        stats.stage[k] = float(v)
    stats.wall = time.perf_counter() - t0
    return stats, merged
