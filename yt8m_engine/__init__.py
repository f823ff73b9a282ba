"""yt8m-engine: a fast engine for the YouTube-8M video-understanding dataset."""

__version__ = "0.1.0"

from .errors import Yt8mError  # noqa: E402,F401
