"""The reader -> workers pipeline shared by infer and eval, and infer's segment and video jobs.

    reader thread (16 MB blocks of whole records in reused buffers, framing + CRCs) -> chunks
        -> worker threads, each: Numba parse straight into 5-frame segment layout -> ONNX Runtime
           (io binding) -> the job: ranking (Numba streaming per-class top-N, or per-video top-k),
           or eval's metric accumulators

Every stage releases the GIL, so the workers overlap on all cores. The order of everything a job
produces is total (segment keys, file order), so the same inputs give byte-identical results whatever
the threads and chunks.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from . import format as fmt
from .engine import OnnxModel, predict_segments, predict_videos, video_batch
from .errors import Yt8mError
from .io.files import is_url
from .io.reader import Reader, merge_notes
from .kernels.warm import warm_up
from .kernels.topk import topk_serial
from .progress import Progress
from .rank.keys import check_records, segment_keys
from .rank.partial import Partial
from .rank.submission import IdTable, video_csv_lines
from .rank.topn import TopN


_DONE = object()


@dataclass
class Stats:
    files: int = 0
    videos: int = 0
    segments: int = 0
    bytes: int = 0
    corrupt: int = 0
    duplicate_ids: int = 0      # records whose video id an earlier record has (written again)
    duplicate_example: str = ""
    notes: dict = field(default_factory=dict)  # Reader.notes of the run (videos left out, oddities)
    stage: dict = field(default_factory=lambda: {k: 0.0 for k in ("read", "parse", "infer", "rank", "write")})
    wall: float = 0.0
    provider: str = ""

    def to_dict(self) -> dict:
        w = max(self.wall, 1e-9)
        return {"files": self.files, "videos": self.videos, "segments": self.segments, "bytes": self.bytes,
                "corrupt": self.corrupt, "duplicate_ids": self.duplicate_ids,
                "notes": {k: v[0] for k, v in self.notes.items()}, "seconds": round(self.wall, 3),
                "videos_per_sec": self.videos / w, "segments_per_sec": self.segments / w,
                "input_mb_per_sec": self.bytes / 1e6 / w,
                "stage_seconds": {k: round(v, 3) for k, v in self.stage.items()}, "provider": self.provider}

    def table(self) -> str:
        d = self.to_dict()
        lines = [f"provider        {d['provider']}",
                 f"files           {d['files']}",
                 f"videos          {d['videos']:>10}   {d['videos_per_sec']:>12.1f} videos/s",
                 f"segments        {d['segments']:>10}   {d['segments_per_sec']:>12.1f} segments/s",
                 f"input           {d['bytes'] / 1e6:>10.1f} MB {d['input_mb_per_sec']:>12.1f} MB/s",
                 f"wall            {d['seconds']:>10.2f} s"]
        lines += [f"  {k:<12}  {v:>10.2f} s busy" for k, v in d["stage_seconds"].items()]
        return "\n".join(lines)


class _Stopped(Exception):
    """The run stopped (an error elsewhere, or Ctrl-C) while a thread waited."""


class _Loan:
    """A read buffer lent to the chunks of one block; back to the free list when every chunk is parsed."""

    def __init__(self, buf, chunks: int, free: queue.Queue):
        self.buf, self.left, self.free = buf, chunks, free
        self.lock = threading.Lock()

    def release(self) -> None:
        with self.lock:
            self.left -= 1
            if self.left == 0:
                self.free.put(self.buf)


@dataclass
class Options:
    """What to compute (picklable: sent to Ray actors)."""

    segment_labels: bool = False
    top_k: int = 20
    segment_max_pred: int = 100000
    segment_label_ids_file: str | None = None
    batch_size: int | None = None
    segment_mode: str = "all"
    skip_corrupt: bool = False
    threads: int | None = None  # worker threads; None: one per core
    chunk: int | None = None    # videos per worker task (None: 64 for CPU segments, else 256)
    providers: str = "auto"
    intra_threads: int | None = None
    io_binding: bool | None = None  # None: on the GPU, and to write into the workers' buffers

    def validate(self) -> "Options":
        if self.segment_mode not in ("all", "topk"):
            raise Yt8mError("--segment-mode must be 'all' or 'topk'")
        if self.top_k < 1 or self.segment_max_pred < 1:
            raise Yt8mError("--top_k and --segment_max_pred must be at least 1")
        return self


def _total_bytes(work: list[tuple[int, str]]) -> int | None:
    """Bytes of the local input files (None where one is a URL: no ETA then)."""
    try:
        return sum(os.path.getsize(p) for _, p in work) if not any(is_url(p) for _, p in work) else None
    except OSError:
        return None


def _workers(opts: Options) -> int:
    return max(1, opts.threads or os.cpu_count() or 1)


def open_model(path: str, opts: Options) -> OnnxModel:
    """The session `run_files` shares between its workers: on a CPU the workers are the parallelism,
    so each model call runs on its worker's own thread (ORT's pool beside them was 1.6x slower)."""
    intra = opts.intra_threads
    if intra is None and "cuda" not in opts.providers and "tensorrt" not in opts.providers:
        intra = max(1, (os.cpu_count() or 1) // _workers(opts))
    # spin=False: ORT's own pool (CPU fallback ops on a GPU) must not spin on the workers' cores
    with ThreadPoolExecutor(1, thread_name_prefix="load-model") as ex:
        loading = ex.submit(OnnxModel, path, opts.providers, threads=intra, io_binding=opts.io_binding, spin=False)
        warm_up()  # Numba's set-up meanwhile: ~0.15 s of a 1-2 s eval
        return loading.result()


def score_segments(model: OnnxModel, fidx: int, b, batch_size: int, cols, state: dict):
    """(predictions [S, columns], keys [S], frame counts [S]) of a parsed chunk's 5-frame segments; the
    prediction buffer is the worker's (state["preds"]), reused chunk after chunk."""
    frames, nf, seg_video, seg_start = b.segments()
    preds = predict_segments(model, frames, nf, batch_size, cols, state.get("preds"))
    state["preds"] = preds.base if preds.base is not None else preds
    return preds, segment_keys(fidx, b.record_index[seg_video], seg_start), nf


class SegmentJob:
    """infer --segment_labels: each chunk's 5-frame segments scored on the segment classes and offered
    to the shared per-class top-N (all-classes mode) or, each segment's top-k only (the starter's mode)."""

    pad_frames = fmt.SEGMENT_SIZE
    ratings = False

    def __init__(self, model: OnnxModel, opts: Options, num_files: int):
        if not model.info.frame_features:
            raise Yt8mError(f"{model.path}: a video-level model cannot score 5-frame segments; use a frame-level model")
        self.model, self.opts, self.num_files = model, opts, num_files
        self.seg_ids = fmt.load_segment_label_ids(opts.segment_label_ids_file)
        self.cols = model.columns_for(self.seg_ids)
        # on a CPU small batches keep the float intermediates in cache (64 segments: 6% faster than
        # 256, 2.5x faster than 8192)
        self.batch_size = opts.batch_size or (8192 if model.on_gpu else 64)
        self.chunk = opts.chunk or (256 if model.on_gpu else 64)
        self.ranker = TopN(len(self.seg_ids), opts.segment_max_pred)
        self.ids = IdTable(num_files)
        self.lock = threading.Lock()

    def run(self, fidx: int, b, state: dict, tick) -> int:
        preds, keys, nf = score_segments(self.model, fidx, b, self.batch_size, self.cols, state)
        tick("infer")
        if self.opts.segment_mode == "topk":  # thread-safe (locks of its own)
            self.ranker.push_top(*topk_serial(preds, min(self.opts.top_k, preds.shape[1])), keys)
        else:
            self.ranker.push(preds, keys)
        with self.lock:
            self.ids.add(fidx, b.record_index, b.ids)
        tick("rank")
        return int(nf.shape[0])

    def result(self) -> Partial:
        return Partial.from_topn(self.ranker, self.seg_ids, self.ids, self.num_files)


class VideoJob:
    """infer without --segment_labels: each video's top-k classes as CSV lines."""

    pad_frames = 1
    ratings = False

    def __init__(self, model: OnnxModel, opts: Options, num_files: int):
        self.model, self.opts, self.num_files = model, opts, num_files
        self.batch_size = opts.batch_size or video_batch(model)
        self.chunk = opts.chunk or 256
        self.lines: dict[int, list[tuple[int, str]]] = {}  # file -> (first record, CSV lines) per chunk
        self.ids = IdTable(num_files)
        self.lock = threading.Lock()

    def run(self, fidx: int, b, state: dict, tick) -> int:
        preds = predict_videos(self.model, b, self.batch_size)
        tick("infer")
        c, sc = topk_serial(preds, min(self.opts.top_k, preds.shape[1]))
        lines = video_csv_lines(b.ids, self.model.info.class_ids[c], sc)
        with self.lock:
            self.lines.setdefault(fidx, []).append((int(b.record_index[0]) if len(b) else 0, lines))
            self.ids.add(fidx, b.record_index, b.ids)
        tick("rank")
        return 0

    def result(self) -> Partial:
        return Partial("video", self.num_files, ids=self.ids, video_text={f: "".join(t for _, t in sorted(v))
                                                            for f, v in self.lines.items()})


def run_files(model, work: list[tuple[int, str]], num_files: int, opts: Options,
              progress: bool = False) -> tuple[Stats, Partial]:
    """Inference over the given (file index, path) pairs; model: a path or an OnnxModel."""
    if not isinstance(model, OnnxModel):
        model = open_model(model, opts)
    job = (SegmentJob if opts.segment_labels else VideoJob)(model, opts, num_files)
    stats = run_pipeline(model, work, job, opts, progress)
    t0 = time.perf_counter()
    partial = job.result()
    stats.stage["rank"] += time.perf_counter() - t0
    return stats, partial


def run_pipeline(model: OnnxModel, work: list[tuple[int, str]], job, opts: Options, progress: bool = False) -> Stats:
    """The reader -> workers pipeline over the given (file index, path) pairs, shared by infer and eval.

    One reader thread reads the files in blocks of whole records and checks their framing (CRCs),
    then hands out chunks of `job.chunk` records; `opts.threads` worker threads each take a chunk,
    parse it (frames padded to `job.pad_frames`: 5 writes them straight into the segment layout) and
    hand it (with the rated segments where `job.ratings`) to `job.run(file index, batch, worker state,
    tick)`, which runs the model and ranks or scores (tick(stage) books the time since the last tick),
    then take the next. Each stage releases
    the GIL (Numba nogil kernels, ONNX Runtime), so the workers keep every core busy with no hand-off
    between stages, and a chunk's frames are still in cache when the model reads them. A job's shared
    state takes updates from several workers at once; its result never depends on the order of chunks.
    """
    return _Pipeline(model, work, job, opts).run(progress)


class _Pipeline:
    """run_pipeline's threads and the state they share (under `lock`)."""

    BLOCK_BYTES = 16 << 20  # bytes read at a time (whole records)

    def __init__(self, model: OnnxModel, work, job, opts: Options):
        self.t_wall = time.perf_counter()
        self.work, self.job, self.opts, self.info = work, job, opts, model.info
        self.workers = _workers(opts)
        self.stats = Stats(files=len(work), provider=model.provider)
        self.lock = threading.Lock()
        self.q_chunks: queue.Queue = queue.Queue(maxsize=4 * self.workers)
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.framer = Reader(self.info.spec, skip_corrupt=opts.skip_corrupt)  # reads the blocks, reports empty files
        # read buffers, reused block after block: memory stays bounded whatever the file sizes, and the
        # OS zeroes no fresh pages per file (a fresh buffer per file was 10% of all CPU time)
        self.free_bufs: queue.Queue = queue.Queue()
        for _ in range(self.workers + 2):
            self.free_bufs.put(np.zeros(0, np.uint8))

    def add(self, key: str, t0: float) -> float:
        """Book the time since t0 to a stage; returns now."""
        t1 = time.perf_counter()
        with self.lock:
            self.stats.stage[key] += t1 - t0
        return t1

    def fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.stop.set()

    def wait_for(self, call, *args):
        """call(*args, timeout=...) once it succeeds; raises _Stopped when the run stops first."""
        while not self.stop.is_set():
            try:
                return call(*args, timeout=0.2)
            except (queue.Full, queue.Empty):
                continue
        raise _Stopped

    def take_buffer(self, n: int) -> np.ndarray:
        buf = self.wait_for(self.free_bufs.get)
        return buf if buf.size >= n else np.empty(max(n, self.BLOCK_BYTES), np.uint8)

    def read_files(self) -> None:
        """The reader thread: blocks of whole records, handed out in chunks of job.chunk records."""
        chunk = self.job.chunk
        try:
            for fidx, path in self.work:
                t0 = time.perf_counter()
                for buf, offs, lens, status, first, fresh in self.framer.blocks(path, self.take_buffer,
                                                                                self.BLOCK_BYTES):
                    check_records(path, first + len(offs))
                    t0 = self.add("read", t0)
                    with self.lock:
                        self.stats.bytes += fresh
                    starts = range(0, len(offs), chunk)
                    loan = _Loan(buf.base if buf.base is not None else buf, len(starts) or 1, self.free_bufs)
                    if not starts:
                        loan.release()
                    for a in starts:
                        sl = slice(a, a + chunk)
                        self.wait_for(self.q_chunks.put, (fidx, path, buf, offs[sl], lens[sl], status[sl], first + a,
                                                          loan))
                    t0 = time.perf_counter()
        except _Stopped:
            pass
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.fail(e)
        finally:
            for _ in range(self.workers):
                self.q_chunks.put(_DONE)

    def work_chunks(self) -> None:
        """A worker thread: parse a chunk, run the job on it, take the next."""
        job, info = self.job, self.info
        reader = Reader(info.spec, skip_corrupt=self.opts.skip_corrupt, pad_frames=job.pad_frames,
                        segments=job.ratings, leave_out=True)
        # this worker's frame buffer, reused chunk after chunk, sized for the longest possible chunk
        # up front (growing it would have the OS zero fresh memory again)
        rows = job.chunk * -(-reader.max_frames // reader.pad_frames) * reader.pad_frames
        store: list = [np.empty((rows, info.spec.total_size), np.uint8)] if info.frame_features else []
        state: dict = {}  # the job's per-worker buffers
        try:
            while True:
                item = self.q_chunks.get()
                if item is _DONE:
                    break
                if not self.stop.is_set():
                    self.process(reader, store, state, *item)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            self.fail(e)
            while self.q_chunks.get() is not _DONE:  # drain, so the reader never blocks
                pass
        finally:
            with self.lock:
                self.stats.corrupt += reader.corrupt
                merge_notes(self.stats.notes, reader.notes)

    def process(self, reader, store, state, fidx, path, buf, offs, lens, status, first, loan) -> None:
        clock = [time.perf_counter()]
        try:
            b = reader.parse_records(buf, offs, lens, status, path, first, store)
        finally:
            loan.release()  # the chunk's bytes are copied out: the read buffer may be reused
        clock[0] = self.add("parse", clock[0])

        def tick(stage: str) -> None:
            clock[0] = self.add(stage, clock[0])

        segments = self.job.run(fidx, b, state, tick)
        with self.lock:
            self.stats.videos += len(b)
            self.stats.segments += segments

    def run(self, progress: bool) -> Stats:
        stats = self.stats
        threads = [threading.Thread(target=self.read_files, daemon=True)]
        threads += [threading.Thread(target=self.work_chunks, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        prog = Progress(getattr(self.job, "name", "infer"), total=_total_bytes(self.work), unit="B", enabled=progress)
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.5)
                    prog.update(stats.bytes, videos=stats.videos, segments=stats.segments)
        except BaseException:  # Ctrl-C: stop the threads before leaving
            self.stop.set()
            for t in threads:
                t.join()
            raise
        if self.errors:
            raise self.errors[0]
        stats.corrupt += self.framer.corrupt
        prog.update(stats.bytes, videos=stats.videos, segments=stats.segments)
        prog.close()
        stats.wall = time.perf_counter() - self.t_wall
        return stats
