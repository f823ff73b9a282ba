"""Video frames at a fixed rate, by timestamps (PyAV, which ships FFmpeg): variable frame rates and
odd containers give the frames a viewer sees at 0 s, 1 s, 2 s, ... (at 1 frame a second)."""
from __future__ import annotations

import numpy as np

from ..errors import Yt8mError


def open_media(path: str):
    """(the av module, the opened container); errors name the file."""
    try:
        import av
    except ImportError:
        raise Yt8mError("reading videos needs PyAV: pip install 'yt8m-engine[extract]'") from None
    try:
        return av, av.open(path)
    except (av.error.FFmpegError, OSError) as e:
        raise Yt8mError(f"{path}: cannot open the video ({e})") from None


def sample_frames(path: str, fps: float = 1.0, max_frames: int = 300):
    """RGB uint8 frames [H, W, 3] of the video at `fps`: frame k is the first decoded frame whose
    timestamp is at or after t0 + k / fps (t0: the first frame's), each frame used at most once;
    at most max_frames. Raises Yt8mError naming the file when it cannot be decoded or has no video."""
    av, container = open_media(path)
    with container:
        if not container.streams.video:
            raise Yt8mError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # FFmpeg decodes with several threads
        t0 = None
        k = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None or frame.time is None:
                    continue
                t = float(frame.time)
                if t0 is None:
                    t0 = t
                if t + 1e-6 < t0 + k / fps:
                    continue
                yield frame.to_ndarray(format="rgb24")
                k = int(np.floor((t - t0) * fps + 1e-6)) + 1  # the next target after this frame's time
                if k >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise Yt8mError(f"{path}: the video is damaged ({e})") from None
