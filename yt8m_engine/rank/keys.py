"""Segment keys: one int64 per 5-frame segment, in data order.

    key = (file index << 40) | (record index in its file << 16) | start frame

Sorting keys sorts segments by (file, record, start): the total order that makes every ranking and CSV
byte-identical whatever the threads, chunks and shards. A record index has 24 bits (16.7 M records a
file), a file index 23 (the key stays positive), a start frame 16.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..errors import Yt8mError

FILE_SHIFT = 40
RECORD_SHIFT = 16
MAX_RECORDS = 1 << 24   # records a file
MAX_FILES = 1 << 23
MAX_START = 1 << 16


def segment_keys(file_index: int, record: np.ndarray, start: np.ndarray) -> np.ndarray:
    return ((np.int64(file_index) << np.int64(FILE_SHIFT)) | (record.astype(np.int64) << np.int64(RECORD_SHIFT))
            | start.astype(np.int64))


@njit(cache=True, nogil=True, inline="always")
def key_file(k):
    return k >> FILE_SHIFT


@njit(cache=True, nogil=True, inline="always")
def key_record(k):
    return (k >> RECORD_SHIFT) & (MAX_RECORDS - 1)


@njit(cache=True, nogil=True, inline="always")
def key_start(k):
    return k & (MAX_START - 1)


def check_records(path: str, records: int) -> None:
    """A file whose records the keys cannot address is refused, naming it."""
    if records > MAX_RECORDS:
        raise Yt8mError(f"{path}: more than {MAX_RECORDS} records in one file; split it")


def check_files(count: int) -> None:
    if count > MAX_FILES:
        raise Yt8mError(f"{count} input files: at most {MAX_FILES} in one run")
