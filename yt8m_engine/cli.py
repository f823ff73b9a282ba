"""The `yt8m-engine` command line: thin click commands over the Python API.

Options are kebab-case; the starter code's underscore spellings (`--train_data_pattern`) are aliases.
User mistakes (Yt8mError) print one line and exit with status 2, without a traceback.
"""
from __future__ import annotations

import json
import os
import sys
import time

import click

from .errors import Yt8mError


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
    """yt8m-engine: read, train, evaluate, export, infer and score YouTube-8M, fast."""


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

    progress = None if as_json else (lambda st: click.echo(f"  checked {os.path.basename(st.path)}: "
                                                            f"{st.records} records, {st.corrupt} corrupt", err=True))
    report = run_inspect(pattern, frame_level=frame_features, progress=progress)
    if as_json:
        echo_json(report.to_dict())
    else:
        click.echo(report.table())
        for p in report.problems[:20]:
            click.echo(f"  problem: {p}")
        if len(report.problems) > 20:
            click.echo(f"  ... and {len(report.problems) - 20} more")


@cli.command()
@click.argument("submission")
@opt("eval-data-pattern", required=True, help="rated frame-level files (e.g. ~/yt8m/3/frame/validate*.tfrecord)")
@opt("top-n", type=int, default=100000, show_default=True, help="K of MAP@K")
@opt("segment-label-ids-file", default=None, help="segment class ids (default: the packaged 1000)")
@opt("skip-corrupt", is_flag=True, help="skip corrupt records instead of failing")
@opt("no-cache", is_flag=True, help="do not read or write the label cache")
@opt("json", "as_json", is_flag=True, help="print one JSON object")
def score(submission, eval_data_pattern, top_n, segment_label_ids_file, skip_corrupt, no_cache, as_json):
    """Kaggle 2019 segment MAP@K of SUBMISSION (Class,Segments CSV) against rated segments."""
    from .score import score as run_score

    res = run_score(submission, eval_data_pattern, top_n=top_n, segment_label_ids_file=segment_label_ids_file,
                    skip_corrupt=skip_corrupt, use_cache=not no_cache)
    if as_json:
        echo_json(res)
        return
    click.echo(f"MAP@{res['top_n']}: {res['map']:.6f} over {res['classes']} classes with positive ratings "
               f"({res['submitted_classes']} submitted, {res['entries']} entries, {res['rated_entries']} rated)")
    click.echo(f"label cache {res['label_cache']}; times: {res['seconds']}")


@cli.command()
@opt("out-dir", default="runs/demo", show_default=True, help="where the demo writes its data and models")
@opt("videos", type=int, default=600, show_default=True, help="videos per synthetic split")
@opt("seed", type=int, default=0, show_default=True)
def demo(out_dir, videos, seed):
    """Run the main job end to end on built-in synthetic data."""
    from .demo import run_demo

    run_demo(out_dir, videos=videos, seed=seed, echo=click.echo)


def main(argv=None) -> None:
    try:
        cli.main(args=argv, standalone_mode=False)
    except Yt8mError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
