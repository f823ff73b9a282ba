"""The `yt8m-engine` command line: thin click commands over the Python API.

Options are kebab-case; the starter code's underscore spellings (`--train_data_pattern`) are aliases.
User mistakes (Yt8mError) print one line and exit with status 2, without a traceback.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import click

from .errors import Yt8mError
from .format import FeatureSpec
from .train import registry
from .train.config import ModelConfig, TrainConfig  # (plain data: no TensorFlow)

# TensorFlow's C++ log lines (CUDA probing on CPU machines, oneDNN banners) are not for users;
# its real errors still reach them as Python exceptions
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def opt(name: str, dest: str | None = None, **kw):
    """An option under its kebab-case name and the starter's underscore spelling."""
    names = ["--" + name]
    if "-" in name:
        names.append("--" + name.replace("-", "_"))
    return click.option(*names, dest or name.replace("-", "_"), **kw)


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=None, sort_keys=False, default=float))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="yt8m-engine")
def cli():
    """yt8m-engine: read, train, evaluate, export, infer and score YouTube-8M, fast.

    Anywhere on the line: -q/--quiet (no progress or notes: results, warnings and errors only),
    -v/--verbose (also per-stage times and every problem found).
    """


# -- data ---------------------------------------------------------------------------------------
@cli.command()
@click.argument("out_dir")
@opt("videos", type=int, default=1000, show_default=True, help="videos per split")
@opt("test-videos", type=int, default=None, help="videos in the test split (default: --videos)")
@opt("shards", type=int, default=4, show_default=True, help="files per split")
@opt("seed", type=int, default=0, show_default=True)
def synth(out_dir, videos, test_videos, shards, seed):
    """Write a synthetic dataset in the exact YouTube-8M layout and format to OUT_DIR."""
    from .io.synth import synth as run_synth

    t0 = time.perf_counter()
    res = run_synth(out_dir, videos=videos, shards=shards, seed=seed, test_videos=test_videos)
    click.echo(f"wrote {res['files']} files ({res['bytes'] / 1e6:.1f} MB) to {out_dir} "
               f"in {time.perf_counter() - t0:.1f} s")


@cli.command()
@click.argument("pattern")
@opt("json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--frame-features/--video-features", "frame_features", default=None, help="force the file kind (default: detect)")
def inspect(pattern, as_json, frame_features):
    """Check every record of the files matching PATTERN (framing, CRCs, schema) and summarise them."""
    from .io.inspect import inspect as run_inspect

    report = run_inspect(pattern, frame_level=frame_features, progress=not as_json)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.table())
        from .progress import LEVEL, VERBOSE

        shown = report.problems if LEVEL >= VERBOSE else report.problems[:20]
        for p in shown:
            click.echo(f"  problem: {p}")
        if len(report.problems) > len(shown):
            click.echo(f"  ... and {len(report.problems) - len(shown)} more (--verbose lists them)")
    if report.totals()["corrupt"]:
        sys.exit(1)  # checked to the end, found corrupt records (see the README's exit codes)


BOOL = click.BOOL


def bopt(name: str, default=False, **kw):
    """A boolean option as the starter's absl flags: bare (--segment_labels), or with a value
    (--segment_labels=true / false / 1 / 0)."""
    return opt(name, type=BOOL, default=default, is_flag=False, flag_value=True, **kw)


def config_options(cls, required: tuple[str, ...] = ()):
    """Options made from the fields of a config dataclass that carry a "help" (their defaults from there:
    one place); required: fields that must be given. The model's options serve `train` and `eval` (the
    starter's scripts accept every model flag; eval checks any given against the trained model)."""
    def deco(f):
        for fl in reversed(dataclasses.fields(cls)):
            if "help" not in fl.metadata:
                continue
            kebab, t = fl.name.replace("_", "-"), fl.metadata.get("type", type(fl.default))
            req = fl.name in required
            text = fl.metadata["help"]
            if fl.metadata.get("parts"):  # an architecture's option: the models that read it, first
                text = f"[{', '.join(n for p in fl.metadata['parts'] for n in registry.users(p))}] {text}".strip()
            kw = dict(help=text or None, show_default=fl.default is not None and not req)
            if t is bool:
                f = bopt(kebab, default=fl.default, **kw)(f)
            else:
                f = opt(kebab, type=t, default=None if req else fl.default, required=req, **kw)(f)
        return f
    return deco


@cli.command()
@config_options(TrainConfig, required=("train_data_pattern",))
@opt("model", default="LogisticModel", show_default=True, help=registry.models_help())
@opt("feature-names", default=None, help="comma-separated (default rgb,audio or mean_rgb,mean_audio)")
@opt("feature-sizes", default=None, help="comma-separated (default 1024,128)")
@bopt("frame-features", default=None, help="frame-level input (default: from --model)")
@bopt("start-new-model", help="discard existing checkpoints in --train_dir")
@opt("start-from", default=None, help="fine-tune: start from this train_dir's latest checkpoint (layers whose "
                                      "shapes differ, e.g. a head for another --num_classes, start fresh)")
@config_options(ModelConfig)
@opt("workers", default=None, help="multi-worker: HOST:PORT,HOST:PORT,... (or set $TF_CONFIG)")
@opt("task-index", type=int, default=None, help="multi-worker: this worker's index in --workers")
def train(**kw):
    """Train a model (resumes from the latest checkpoint in --train_dir)."""
    from .train.trainer import train as run_train

    frame = kw.pop("frame_features")
    if frame is None:
        frame = kw["model"] in registry.MODELS and registry.MODELS[kw["model"]].frame_level
    spec = FeatureSpec.parse(kw.pop("feature_names"), kw.pop("feature_sizes"), frame)
    start_new = kw.pop("start_new_model")
    start_from_dir = kw.pop("start_from")
    workers, task_index = kw.pop("workers"), kw.pop("task_index")
    mfields = {f for f in ModelConfig.__dataclass_fields__}
    mcfg = ModelConfig(feature_names=list(spec.names), feature_sizes=list(spec.sizes), frame_features=frame,
                       **{k: v for k, v in kw.items() if k in mfields})
    tcfg = TrainConfig(**{k: v for k, v in kw.items() if k not in mfields})
    from . import progress

    def echo(line: str) -> None:  # --quiet: the outcome only (no step lines)
        if progress.LEVEL > progress.QUIET or line.startswith(("warning", "interrupted", "trained", "already")):
            click.echo(line)

    run_train(mcfg, tcfg, start_new_model=start_new, echo=echo, workers=workers, task_index=task_index,
              start_from_dir=start_from_dir)


@cli.command("eval")
@opt("train-dir", default=None, help="evaluate this train_dir's latest checkpoint (default /tmp/yt8m_model/ "
                                   "when no ONNX --model is given, as the starter)")
@opt("model", "model_file", default=None,
     help="an exported .onnx file; or, with --train_dir, the architecture name (checked against its config)")
@opt("eval-data-pattern", required=True)
@bopt("segment-labels", help="also the starter's segment metrics and Kaggle MAP@K")
@opt("batch-size", type=int, default=None, help="model batch (default: 64 on a CPU, 256 on a GPU)")
@opt("top-k", type=int, default=20, show_default=True, help="k of GAP@k")
@opt("top-n", type=int, default=100000, show_default=True, help="K of the segment MAP@K")
@opt("segment-label-ids-file", default=None)
@opt("vocabulary", default=None, help="vocabulary.csv for class names in class_ap.csv")
@opt("output-dir", default=None, help="reports (default: TRAIN_DIR/eval, or MODEL.eval)")
@bopt("run-once", help="evaluate once (default with --model); else wait for new checkpoints")
@opt("poll-seconds", type=float, default=60.0, show_default=True)
@opt("providers", default="auto", show_default=True)
@click.option("--threads", "--num_readers", "threads", type=int, default=None,
              help="worker threads (default: one per core)")
@opt("skip-corrupt", is_flag=True)
@opt("json", "as_json", is_flag=True, help="print one JSON object")
@bopt("frame-features", default=None, help="(the starter's; checked against the trained model)")
@opt("feature-names", default=None, help="(the starter's; checked against the trained model)")
@opt("feature-sizes", default=None, help="(the starter's; checked against the trained model)")
@config_options(ModelConfig)
@click.pass_context
def eval_cmd(ctx, train_dir, model_file, eval_data_pattern, segment_labels, batch_size, top_k, top_n,
             segment_label_ids_file, vocabulary, output_dir, run_once, poll_seconds, providers, threads, skip_corrupt,
             as_json, frame_features, feature_names, feature_sizes, **model_flags):
    """Evaluate a model: Hit@1, PERR, GAP, mAP, loss (and segment metrics)."""
    from .evaluate import evaluate, tensorboard_summaries, write_reports
    from .io.files import check_output_dir

    if model_file and (model_file.endswith(".onnx") or os.path.isfile(model_file)):
        if train_dir:
            raise Yt8mError("give --train_dir or an ONNX --model, not both")
    else:  # the starter's eval: --model names the architecture the train_dir holds
        train_dir = train_dir or "/tmp/yt8m_model/"
        given = {k: v for k, v in model_flags.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}
        check_model_flags(train_dir, model_file, frame_features, feature_names, feature_sizes, given)
        model_file = None
    target = train_dir or model_file
    out_dir = output_dir or (os.path.join(train_dir, "eval") if train_dir else model_file + ".eval")
    check_output_dir(out_dir)
    seen = None
    while True:
        ckpt = None
        if train_dir:
            from .export.paths import checkpoint_path

            ckpt = checkpoint_path(train_dir)
            if ckpt == seen:
                time.sleep(poll_seconds)
                continue
            seen = ckpt
        res = evaluate(target, eval_data_pattern, segment_labels=segment_labels, batch_size=batch_size,
                       top_k=top_k, top_n=top_n, segment_label_ids_file=segment_label_ids_file,
                       skip_corrupt=skip_corrupt, providers=providers, checkpoint=ckpt, progress=not as_json,
                       threads=threads)
        write_reports(res, out_dir, vocabulary)
        if train_dir:
            tensorboard_summaries(res, train_dir)
        if as_json:
            echo_json(res.to_dict())
        else:
            click.echo(res.table())
            click.echo(f"reports in {out_dir}")
            warn_notes(res["notes"], "left out of the metrics")
        if run_once or model_file:
            return


def check_model_flags(train_dir: str, model: str | None, frame_features, feature_names, feature_sizes,
                      given: dict) -> None:
    """Model flags given to eval / inference with a --train_dir must describe the trained model: equal is
    fine, a difference is one error naming the flag (the starter read them from model_flags.json)."""
    from .train.config import CONFIG_FILE, load_config

    if not os.path.isdir(train_dir):
        raise Yt8mError(f"{train_dir}: no such train_dir")
    cfg = load_config(train_dir)[0]
    where = os.path.join(train_dir, CONFIG_FILE)
    diffs = []
    if model and model != cfg.model:
        diffs.append(f"--model {model} (trained: {cfg.model})")
    if frame_features is not None and frame_features != cfg.frame_features:
        diffs.append(f"--frame_features={frame_features} (trained: {cfg.frame_features})")
    if feature_names or feature_sizes:
        spec = FeatureSpec.parse(feature_names or ",".join(cfg.feature_names),
                                 feature_sizes or ",".join(map(str, cfg.feature_sizes)), cfg.frame_features)
        if list(spec.names) != list(cfg.feature_names) or list(spec.sizes) != list(cfg.feature_sizes):
            diffs.append(f"--feature_names {','.join(spec.names)} --feature_sizes {','.join(map(str, spec.sizes))} "
                         f"(trained: {','.join(cfg.feature_names)} / {','.join(map(str, cfg.feature_sizes))})")
    diffs += [f"--{k} {v} (trained: {getattr(cfg, k)})" for k, v in given.items() if getattr(cfg, k) != v]
    if diffs:
        raise Yt8mError(f"{where}: the model in {train_dir} differs from the flags: {'; '.join(diffs)}; "
                        "drop them or give the matching values")


@cli.command()
@opt("train-dir", required=True)
@opt("output", "--output_file", required=True, help="the .onnx file to write")
@opt("classes", type=click.Choice(["all", "segment"]), default="all", show_default=True,
     help="'segment': only the 1000 segment classes (4x less to copy back and rank)")
@opt("fp16", is_flag=True, help="half-precision weights and compute (inputs and outputs keep their types)")
@opt("checkpoint", default=None, help="a checkpoint path (default: the latest)")
@opt("frames", type=int, default=None,
     help="a fixed frame count, e.g. 5 for segment inference only (max pooling as Max over frame slices)")
def export(train_dir, output, classes, fp16, checkpoint, frames):
    """Export a trained model to ONNX (uint8 input, dequantization inside the graph)."""
    from .export.onnx_export import export as run_export

    t0 = time.perf_counter()
    r = run_export(train_dir, output, classes=classes, fp16=fp16, checkpoint=checkpoint, frames=frames)
    click.echo(f"wrote {r['output']} ({r['model']}, step {r['step']}, classes {r['classes']}"
               f"{', fp16' if r['fp16'] else ''}, {r['bytes'] / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f} s")


cli.add_command(export, "export_model")

STARTER_SEGMENT_IDS_URL = "https://raw.githubusercontent.com/google/youtube-8m/master/segment_label_ids.csv"


@cli.command()
@opt("model", default=None, help="an exported .onnx file (or give --train_dir, or --input_model_tgz)")
@opt("train-dir", default=None, help="run this train_dir's latest checkpoint (its ONNX export, made if missing)")
@opt("input-model-tgz", default=None, help="a model packed by --output_model_tgz (the starter's option)")
@opt("untar-model-dir", default="/tmp/yt8m-model", show_default=True, help="where --input_model_tgz is unpacked")
@opt("output-model-tgz", default=None, help="also pack the model used (ONNX + config) into this .tgz")
@opt("input-data-pattern", required=True, help="e.g. ~/yt8m/3/frame/test*.tfrecord")
@opt("output-file", default=None, help="the CSV (a partial ranking with --shard); none with --benchmark")
@bopt("segment-labels", help="rank 5-frame segments per class (Kaggle 2019)")
@opt("top-k", type=int, default=20, show_default=True, help="classes per video (or per segment, topk mode)")
@opt("segment-max-pred", type=int, default=100000, show_default=True, help="segments kept per class")
@opt("segment-label-ids-file", default=None, help="default: the packaged 1000 segment classes (the starter's "
                                                  "URL names the same file)")
@opt("segment-mode", type=click.Choice(["all", "topk"]), default="all", show_default=True,
     help="all: every segment competes in every class; topk: only in its top-k classes (the starter)")
@opt("batch-size", type=int, default=None, help="model batch (default: segments 8192 on GPU, 64 on CPU; videos 256 on GPU, 16 on CPU)")
@opt("providers", default="auto", show_default=True, help="auto, or a list of cuda, tensorrt, cpu")
@click.option("--threads", "--num_readers", "threads", type=int, default=None,
              help="worker threads (each parses, runs the model on and ranks its chunks); default: one per core")
@opt("shard", default=None, help="i/n: process files with index % n == i, write a partial ranking")
@opt("engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
     help="ray: shards on Ray Data actors (pip install 'yt8m-engine[ray]')")
@opt("address", default=None, help="Ray cluster address (auto, or HOST:PORT); default: start a local one")
@opt("skip-corrupt", is_flag=True)
@opt("benchmark", is_flag=True, help="print throughput and per-stage times")
@opt("json", "as_json", is_flag=True, help="print the statistics as one JSON object")
def infer(model, train_dir, input_model_tgz, untar_model_dir, output_model_tgz, input_data_pattern, output_file,
          segment_labels, top_k, segment_max_pred, segment_label_ids_file, segment_mode, batch_size, providers,
          threads, shard, engine, address, skip_corrupt, benchmark, as_json):
    """Write a Kaggle submission (video- or segment-level) with ONNX Runtime. (`inference` is the same
    command under the starter's name.)"""
    from .infer import infer as run_infer
    from .starter import model_for_inference

    if not output_file and not benchmark:
        raise Yt8mError("give --output_file (or --benchmark to measure without writing)")
    if segment_label_ids_file == STARTER_SEGMENT_IDS_URL:
        segment_label_ids_file = None  # the packaged copy of that very file: no download
    model = model_for_inference(model, train_dir, input_model_tgz, untar_model_dir, segment_labels)
    if output_model_tgz:
        from .starter import pack_model

        pack_model(model, output_model_tgz, segment_labels)
    st = run_infer(model, input_data_pattern, output_file, segment_labels=segment_labels, top_k=top_k,
                   segment_max_pred=segment_max_pred, segment_label_ids_file=segment_label_ids_file,
                   batch_size=batch_size, providers=providers, shard=shard, segment_mode=segment_mode,
                   skip_corrupt=skip_corrupt, threads=threads, progress=not as_json, engine=engine, address=address)
    warn_duplicates(st.duplicate_ids, st.duplicate_example)
    warn_notes(st.notes, "left out of the ranking")
    if as_json:
        echo_json(st.to_dict())
        return
    from .progress import LEVEL, VERBOSE

    if benchmark or LEVEL >= VERBOSE:
        click.echo(st.table())
    if output_file:
        click.echo(f"wrote {output_file}: {st.videos} videos, {st.segments} segments in {st.wall:.1f} s "
                   f"({st.provider})" + (f"; skipped {st.corrupt} corrupt records" if st.corrupt else ""))


cli.add_command(infer, "inference")


def warn_notes(notes: dict, left_out: str) -> None:
    from .io.reader import note_lines
    from .progress import LEVEL, QUIET

    if LEVEL == QUIET:
        return
    for line in note_lines(notes, left_out):
        click.echo(f"note: {line}", err=True)


def warn_duplicates(count: int, example: str) -> None:
    if count:
        click.echo(f"warning: {count} record{'s' if count > 1 else ''} repeat{'' if count > 1 else 's'} a video id "
                   f"of another record (e.g. {example!r}); the CSV has a line for each", err=True)


@cli.command()
@click.argument("partials", nargs=-1, required=True)
@opt("output-file", required=True)
@opt("segment-max-pred", type=int, default=None, help="default: the partials' own")
def merge(partials, output_file, segment_max_pred):
    """Combine 'infer --shard' partial rankings into the final CSV."""
    from .infer import merge as run_merge

    r = run_merge(list(partials), output_file, segment_max_pred)
    warn_duplicates(r["duplicate_ids"], r["duplicate_example"])
    click.echo(f"wrote {r['output']} from {r['partials']} partial rankings ({r['bytes'] / 1e6:.1f} MB)")


def score_options(top_n: int, cache_help: str):
    def deco(f):
        for d in reversed([
            click.argument("submission", required=False),
            opt("submission-file", default=None, help="the submission (instead of the SUBMISSION argument)"),
            opt("eval-data-pattern", required=True, help="rated frame-level files (e.g. ~/yt8m/3/frame/validate*.tfrecord)"),
            opt("top-n", type=int, default=top_n, show_default=True, help="K of MAP@K (0: no cut, every id counts)"),
            opt("label-cache", default=None, help=cache_help),
            opt("segment-label-ids-file", default=None, help="segment class ids (default: the packaged 1000)"),
            opt("skip-corrupt", is_flag=True, help="skip corrupt records instead of failing"),
            opt("no-cache", is_flag=True, help="do not read or write the label cache"),
            opt("json", "as_json", is_flag=True, help="print one JSON object")]):
            f = d(f)
        return f
    return deco


@cli.command()
@score_options(100000, "the label cache file (default: one per set of files in the cache folder)")
def score(**kw):
    """Kaggle 2019 segment MAP@K of SUBMISSION (Class,Segments CSV) against rated segments."""
    run_score_cmd(**kw)


@cli.command("segment_eval_inference")
@score_options(0, "the label cache file (none when not given, as the starter; its text caches are read too)")
def segment_eval_inference(**kw):
    """`score` under the starter's name and defaults (--top_n 0: no cut; a label cache only with --label_cache)."""
    if not kw["label_cache"]:
        kw["no_cache"] = True
    run_score_cmd(**kw)


def run_score_cmd(submission, submission_file, eval_data_pattern, top_n, label_cache, segment_label_ids_file,
                  skip_corrupt, no_cache, as_json):
    from .score import score as run_score

    if bool(submission) == bool(submission_file):
        raise Yt8mError("give the submission once: as the SUBMISSION argument or as --submission_file")
    res = run_score(submission or submission_file, eval_data_pattern, top_n=top_n,
                    segment_label_ids_file=segment_label_ids_file, skip_corrupt=skip_corrupt, use_cache=not no_cache,
                    progress=not as_json, cache_file=label_cache)
    if as_json:
        echo_json(res.to_dict())
        return
    click.echo(res.table())


def extract_options(f):
    for d in reversed([
        click.argument("videos", nargs=-1),
        opt("input-videos-csv", default=None, help="lines <video_file>,<label;label;...> (labels optional)"),
        opt("model-dir", default="~/yt8m", show_default=True,
            help="classify_image_graph_def.pb, the PCA files and VGGish's (downloaded there when missing)"),
        opt("frames-per-second", type=float, default=1.0, show_default=True),
        opt("max-frames", type=int, default=300, show_default=True),
        opt("skip-corrupt", is_flag=True, help="leave out (and count) videos that cannot be read")]):
        f = d(f)
    return f


@cli.command()
@extract_options
@opt("output-tfrecords-file", required=True, help="the TFRecord file to write")
@opt("shards", type=int, default=1, show_default=True, help="N files (OUTPUT-00000-of-0000N...), video i in i % N")
@opt("providers", default="auto", show_default=True,
     help="ONNX Runtime's, for Inception-v3 and VGGish: auto (CUDA when usable), or cuda, tensorrt, cpu")
@bopt("skip-frame-level-features", help="video-level records (mean_rgb, mean_audio) instead")
@opt("labels-feature-key", default="labels", show_default=True)
@opt("image-feature-key", default="rgb", show_default=True)
@opt("video-file-feature-key", default="id", show_default=True)
@bopt("insert-zero-audio-features", default=None,
      help="128 zero bytes of audio a frame, as the starter's extractor (default: VGGish audio features, "
           "vggish_model.ckpt and vggish_pca_params.npz in --model-dir; =false: no audio)")
def extract(videos, input_videos_csv, model_dir, frames_per_second, max_frames, skip_corrupt, output_tfrecords_file,
            skip_frame_level_features, labels_feature_key, image_feature_key, video_file_feature_key,
            insert_zero_audio_features, shards, providers):
    """Videos -> YouTube-8M records: RGB features as the dataset's (Inception-v3, PCA, 8 bits), the
    starter extractor's flags. Needs PyAV ('yt8m-engine[extract]') and TensorFlow ('[train]')."""
    from .extract.extract import extract as run_extract

    r = run_extract(list(videos), output_tfrecords_file, input_videos_csv=input_videos_csv, model_dir=model_dir,
                    frames_per_second=frames_per_second, max_frames=max_frames,
                    skip_frame_level_features=skip_frame_level_features, labels_feature_key=labels_feature_key,
                    image_feature_key=image_feature_key, video_file_feature_key=video_file_feature_key,
                    insert_zero_audio_features=insert_zero_audio_features, skip_corrupt=skip_corrupt,
                    shards=shards, providers=providers, echo=lambda s: click.echo(s, err=True))
    audio = {"vggish": "audio: VGGish", "zeros": "audio: zeros (--insert_zero_audio_features)", "none": "no audio"}
    click.echo(f"wrote {r['output']}: {r['videos']} videos, {r['frames']} frames"
               + (f"; {r['failed']} videos skipped" if r["failed"] else "") + "; " + audio[r["audio"]]
               + (f"; {r['without_audio_stream']} videos without an audio stream: zero audio"
                  if r["without_audio_stream"] else ""))


@cli.command()
@extract_options
@opt("model", required=True, help="an exported .onnx file")
@opt("vocabulary", default=None, help="the YouTube-8M vocabulary.csv, for class names")
@opt("top-k", type=int, default=20, show_default=True)
@opt("providers", default="auto", show_default=True)
@opt("json", "as_json", is_flag=True, help="print one JSON list")
def predict(videos, input_videos_csv, model_dir, frames_per_second, max_frames, skip_corrupt, model, vocabulary,
            top_k, providers, as_json):
    """Labels for your own videos: extract (as `extract`), then the model; per video its top classes and,
    for frame-level models, each one's best 5-second segment."""
    from .extract.extract import predict as run_predict, predictions_table

    res = run_predict(list(videos), model, input_videos_csv=input_videos_csv, model_dir=model_dir,
                      frames_per_second=frames_per_second, max_frames=max_frames, vocabulary=vocabulary,
                      top_k=top_k, providers=providers, skip_corrupt=skip_corrupt,
                      echo=lambda s: click.echo(s, err=True))
    if as_json:
        echo_json(res)
    else:
        click.echo(predictions_table(res))


@cli.command()
@opt("out-dir", default="runs/demo", show_default=True, help="where the demo writes its data and models")
@opt("videos", type=int, default=600, show_default=True, help="videos per synthetic split")
@opt("seed", type=int, default=0, show_default=True)
def demo(out_dir, videos, seed):
    """Run the main job end to end on built-in synthetic data."""
    from .demo import run_demo

    run_demo(out_dir, videos=videos, seed=seed, echo=click.echo)


TRAIN_EXTRA = {"tensorflow", "keras", "tensorboard", "onnx", "matplotlib", "tf_keras"}


def split_verbosity(args: list[str]) -> tuple[int, list[str]]:
    """(progress level, the other arguments): -q/--quiet and -v/--verbose are taken wherever they stand
    on the line (before a '--'), so `yt8m-engine infer ... --quiet` works as `yt8m-engine --quiet infer`."""
    from . import progress

    level, out = progress.NORMAL, []
    for i, a in enumerate(args):
        if a == "--":
            out += args[i:]
            break
        if a in ("-q", "--quiet"):
            level = progress.QUIET
        elif a in ("-v", "--verbose"):
            level = progress.VERBOSE
        else:
            out.append(a)
    return level, out


def main(argv=None) -> None:
    from . import kernels, progress

    kernels.FREEZE_AFTER_WARM_UP = True

    progress.LEVEL, argv = split_verbosity(list(sys.argv[1:] if argv is None else argv))
    try:
        from .starter import absl_args

        cli.main(args=absl_args(cli, argv), prog_name="yt8m-engine", standalone_mode=False)
    except Yt8mError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort as e:
        if isinstance(e.__cause__, EOFError):  # click turns an EOFError from anywhere into Abort
            click.echo(f"error: unexpected end of input ({e.__cause__})", err=True)
            sys.exit(2)
        click.echo("aborted", err=True)
        sys.exit(130)
    except ModuleNotFoundError as e:
        if e.name not in TRAIN_EXTRA:
            raise
        click.echo(f"error: this needs {e.name}, part of the training install: pip install 'yt8m-engine[train]' "
                   "(reading, inspecting, inferring, scoring and evaluating ONNX files do not)", err=True)
        sys.exit(2)
    except OSError as e:  # the machine said no (a full disk, a permission): one line, no traceback
        name = f"{e.filename}: " if getattr(e, "filename", None) else ""
        click.echo(f"error: {name}{e.strerror or e}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
