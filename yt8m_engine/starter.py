"""The starter code's command lines, unchanged: absl's flag forms, and its model packaging.

`python train.py --x=1 --noy` becomes `yt8m-engine train --x=1 --noy`: the verbs carry the starter's
names (train, eval, inference, segment_eval_inference, export_model) and every flag of its scripts
(see the README's table). absl also accepts `-x` for `--x` and `--nox` for `--x=false`; click does
not, so `absl_args` rewrites those two forms before click parses the line. No TensorFlow here.
"""
from __future__ import annotations

import os
import tarfile

import click

from .errors import Yt8mError


def _is_bool(p: click.Option) -> bool:
    return p.is_bool_flag or isinstance(p.type, click.types.BoolParamType)


def absl_args(group: click.Group, args: list[str]) -> list[str]:
    """args with absl's `-flag[=v]` as `--flag[=v]` and `--noflag` as `--flag=false` (or left out, for
    an on/off switch that is off by default), for the options of the verb on the line."""
    out: list[str] = []
    opts = None  # the verb's options by name, once the verb is found
    for i, a in enumerate(args):
        if opts is None:
            out.append(a)
            if not a.startswith("-"):
                cmd = group.commands.get(a)
                if cmd is None:
                    return args  # click names the unknown verb
                opts = {o: p for p in cmd.params if isinstance(p, click.Option) for o in p.opts}
            continue
        if a == "--":
            return out + args[i:]
        out.extend(_rewrite(opts, a))
    return out


def _rewrite(opts: dict, a: str) -> list[str]:
    name = a.split("=", 1)[0]
    if name in opts or not a.startswith("-"):
        return [a]
    if not a.startswith("--") and len(name) > 2 and "-" + name in opts:  # -flag: absl's single dash
        return ["-" + a]
    bare = name.lstrip("-")
    if bare.startswith("no") and "=" not in a:
        p = opts.get("--" + bare[2:])
        if p is not None and _is_bool(p):
            if p.is_flag:  # an on/off switch, off by default: --noX is its default
                return [] if p.default is not True else [a]
            return [f"--{bare[2:]}=false"]
    return [a]


# -- model packaging: inference.py's --output_model_tgz / --input_model_tgz / --untar_model_dir ----------
def model_name(segment_labels: bool) -> str:
    """The starter's names for what it packs: segment_inference_model / inference_model."""
    return "segment_inference_model.onnx" if segment_labels else "inference_model.onnx"


def model_for_inference(model: str | None, train_dir: str | None, input_model_tgz: str | None,
                        untar_model_dir: str, segment_labels: bool) -> str:
    """The ONNX file to run: given; a train_dir's latest checkpoint (its export beside it, made in a
    process of its own when missing, as eval does); or the one in an unpacked --input_model_tgz."""
    given = [x for x in (model, train_dir, input_model_tgz) if x]
    if len(given) != 1:
        raise Yt8mError("give one of --model (an .onnx file), --train_dir or --input_model_tgz")
    if model:
        return model
    if train_dir:
        from .export.paths import eval_classes, exported
        from .train.config import load_config

        classes = "segment" if segment_labels and "segment" in eval_classes(load_config(train_dir)[0]) else "all"
        return exported(train_dir, None, (classes,))[classes]
    return unpack_model(input_model_tgz, untar_model_dir, segment_labels)


def pack_model(model_path: str, tgz: str, segment_labels: bool) -> None:
    """The model as the starter packs it: one .tgz holding the inference model (here the ONNX file,
    which describes itself: no model_flags.json needed), written atomically."""
    from .io.files import AtomicWriter, check_output

    check_output(tgz, [model_path])
    with AtomicWriter(tgz) as f, tarfile.open(fileobj=f, mode="w:gz") as tar:
        tar.add(model_path, arcname=model_name(segment_labels))


def unpack_model(tgz: str, folder: str, segment_labels: bool) -> str:
    """Unpack a --output_model_tgz package into folder; the ONNX file for this mode."""
    try:
        with tarfile.open(tgz, "r:*") as tar:
            names = [m.name for m in tar.getmembers() if m.isfile() and m.name.endswith(".onnx")]
            os.makedirs(folder, exist_ok=True)
            tar.extractall(folder, members=[tar.getmember(n) for n in names], filter="data")
    except FileNotFoundError:
        raise Yt8mError(f"{tgz}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise Yt8mError(f"{tgz}: not a model package written by --output_model_tgz ({e})") from None
    want = model_name(segment_labels)
    if want in names:
        return os.path.join(folder, want)
    if len(names) == 1 and (segment_labels or names[0] != model_name(True)):
        return os.path.join(folder, names[0])
    raise Yt8mError(f"{tgz}: holds {', '.join(names) or 'no .onnx file'}, not {want}")
