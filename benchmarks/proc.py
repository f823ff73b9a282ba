"""Timing a command as a process of its own: wall time and peak RSS.

The command is started by a small launcher process, not by the benchmark itself: Linux carries the
peak RSS of the image a process replaces at exec into its own figure, so a child forked from a
benchmark that holds TensorFlow would report the benchmark's memory as its own.
"""
import json
import os
import subprocess
import sys
import tempfile

_LAUNCHER = """
import json, os, sys, time
t = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"status": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t,
               "rss_mb": ru.ru_maxrss / 1024}, f)
"""


def timed(cmd, env=None):
    """(seconds, peak RSS MB of the command and the children it waited for, stdout); exits on failure."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as res:
        subprocess.run([sys.executable, "-c", _LAUNCHER, res.name, *cmd], stdout=out, stderr=err,
                       env=env if env is not None else os.environ, check=False)
        r = json.load(res)
        out.seek(0)
        err.seek(0)
        if r["status"] != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
        return r["seconds"], r["rss_mb"], out.read().decode()


if __name__ == "__main__":  # python benchmarks/proc.py CMD...: prints seconds and peak RSS
    s, rss, out = timed(sys.argv[1:])
    sys.stdout.write(out)
    print(f"{s:.2f} s, peak RSS {rss:.0f} MB")
