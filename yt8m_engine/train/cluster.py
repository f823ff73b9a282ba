"""Multi-worker training's cluster: from --workers / --task_index (written to $TF_CONFIG, which
MultiWorkerMirroredStrategy reads) or from an existing $TF_CONFIG. No TensorFlow here."""
from __future__ import annotations

import os

from ..errors import Yt8mError


def tf_config(workers: str | None, task_index: int | None) -> dict | None:
    """The cluster of a multi-worker run: from --workers/--task_index, else from $TF_CONFIG, else None."""
    import json

    if workers:
        hosts = [w.strip() for w in workers.split(",") if w.strip()]
        if task_index is None or not 0 <= task_index < len(hosts):
            raise Yt8mError(f"--task_index must be in [0, {len(hosts)}) with --workers")
        cfg = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}
        os.environ["TF_CONFIG"] = json.dumps(cfg)
        return cfg
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        cfg = json.loads(raw)
        n = sum(len(v) for v in cfg["cluster"].values())
        cfg["task"]["type"], int(cfg["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise Yt8mError(f"$TF_CONFIG is not a valid cluster description ({e})") from None
    return cfg if n > 1 else None


def is_chief(cfg: dict | None) -> bool:
    if cfg is None:
        return True
    t = cfg["task"]
    if "chief" in cfg["cluster"]:
        return t["type"] == "chief"
    return t["type"] == "worker" and int(t["index"]) == 0
