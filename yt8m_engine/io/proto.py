"""Protobuf wire format of tf.train.Example / SequenceExample: Numba decoding and Python encoding.

Messages (from tensorflow/core/example/{example,feature}.proto):
    Example         { Features features = 1; }
    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
    Features        { map<string, Feature> feature = 1; }          map entry: key = 1, value = 2
    FeatureLists    { map<string, FeatureList> feature_list = 1; }
    FeatureList     { repeated Feature feature = 1; }
    Feature         { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }  FloatList { repeated float value = 1; }  Int64List { repeated int64 value = 1; }
Repeated scalars are accepted packed and unpacked, as protobuf parsers must.

Decoding runs in two Numba passes over a batch of records: `locate_and_count` finds every wanted
field, validates it and counts its values; the caller allocates outputs; `fill` copies the values.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ..kernels.segments import copy_into

# Record error codes (0..3 are framing codes from tfrecord.py).
E_PROTO = 4          # malformed protobuf
E_MISSING = 5        # aux1 = key code
E_TYPE = 6           # aux1 = key code, aux2 = kind found
E_FRAME_LEN = 7      # aux1 = frame feature index, aux2 = frame index, aux3 = byte length
E_FRAME_VALUES = 8   # aux1 = frame feature index, aux2 = frame index, aux3 = number of byte strings
E_VIDEO_LEN = 9      # aux1 = key code, aux2 = number of floats
E_CLASS = 10         # aux1 = key code, aux2 = class id
E_SEG_START = 11     # aux2 = start time, aux3 = number of frames
E_SEG_LISTS = 12     # aux1 = #labels, aux2 = #start times, aux3 = #scores
E_ID = 13            # aux2 = number of id values

# Context key codes; frame/video feature keys follow from K_FEATURE0 in the spec's order.
K_ID = 0
K_VIDEO_ID = 1
K_LABELS = 2
K_SEG_LABELS = 3
K_SEG_START = 4
K_SEG_SCORES = 5
K_FEATURE0 = 6
CONTEXT_KEYS = ("id", "video_id", "labels", "segment_labels", "segment_start_times", "segment_scores")

KIND_NONE = 0
KIND_BYTES = 1
KIND_FLOAT = 2
KIND_INT64 = 3
KIND_NAMES = ("empty", "bytes_list", "float_list", "int64_list")


def csr_bytes(items: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Byte strings laid end to end: (uint8 data, int64 offsets of length n + 1)."""
    off = np.zeros(len(items) + 1, np.int64)
    np.cumsum([len(r) for r in items], out=off[1:])
    return np.frombuffer(b"".join(items), np.uint8).copy(), off


def key_table(names):
    """Concatenated key bytes and offsets for Numba key matching."""
    return csr_bytes([n.encode() for n in names])


@njit(cache=True, nogil=True, inline="always")
def _varint(buf, p, end):
    """Returns (value as uint64, new position); position -1 on malformed input."""
    result = np.uint64(0)
    shift = 0
    while p < end:
        b = buf[p]
        p += 1
        if shift < 64:
            result |= np.uint64(b & 0x7F) << np.uint64(shift)
        if b < 0x80:
            return result, p
        shift += 7
        if shift >= 70:
            return result, -1
    return result, -1


@njit(cache=True, nogil=True)
def _next_field(buf, p, end):
    """Parse one field at p. Returns (field, wire_type, value_start, value_end_or_varint, next_pos).

    For wire type 2 value is buf[value_start:value_end]; for varints value_end holds the value's low
    bits (as int64) and value_start the position after it. next_pos is -1 on malformed input.
    """
    tag, p = _varint(buf, p, end)
    if p < 0:
        return 0, 0, 0, 0, -1
    field = np.int64(tag >> np.uint64(3))
    wt = np.int64(tag & np.uint64(7))
    if field == 0:
        return 0, 0, 0, 0, -1
    if wt == 0:
        v, q = _varint(buf, p, end)
        if q < 0:
            return 0, 0, 0, 0, -1
        return field, wt, p, np.int64(v), q
    if wt == 2:
        ln, q = _varint(buf, p, end)
        if q < 0 or ln > np.uint64(end - q):
            return 0, 0, 0, 0, -1
        e = q + np.int64(ln)
        return field, wt, q, e, e
    if wt == 5:
        if p + 4 > end:
            return 0, 0, 0, 0, -1
        return field, wt, p, p + 4, p + 4
    if wt == 1:
        if p + 8 > end:
            return 0, 0, 0, 0, -1
        return field, wt, p, p + 8, p + 8
    return 0, 0, 0, 0, -1


@njit(cache=True, nogil=True)
def _match_key(buf, s, e, ktab, koff):
    n = e - s
    for k in range(koff.shape[0] - 1):
        a = koff[k]
        if koff[k + 1] - a != n:
            continue
        same = True
        for i in range(n):
            if buf[s + i] != ktab[a + i]:
                same = False
                break
        if same:
            return k
    return -1


@njit(cache=True, nogil=True)
def _scan_map(buf, s, e, ktab, koff, vs, ve, r):
    """Walk a Features / FeatureLists message; store each wanted key's value span in vs/ve[r, k]."""
    p = s
    while p < e:
        f, wt, a, b, p = _next_field(buf, p, e)
        if p < 0:
            return False
        if f != 1 or wt != 2:
            continue
        q = a
        ks = -1
        ke = -1
        xs = -1
        xe = -1
        while q < b:
            g, wt2, c, d, q = _next_field(buf, q, b)
            if q < 0:
                return False
            if g == 1 and wt2 == 2:
                ks = c
                ke = d
            elif g == 2 and wt2 == 2:
                xs = c
                xe = d
        if ks < 0:
            continue
        k = _match_key(buf, ks, ke, ktab, koff)
        if k >= 0:
            if xs < 0:  # entry without a value: an empty message
                xs = b
                xe = b
            vs[r, k] = xs
            ve[r, k] = xe
    return True


@njit(cache=True, nogil=True)
def _feature_kind(buf, s, e):
    """Kind of a Feature message and the span of its list. Returns (kind, ls, le, ok)."""
    kind = KIND_NONE
    ls = s
    le = s
    p = s
    while p < e:
        f, wt, a, b, p = _next_field(buf, p, e)
        if p < 0:
            return KIND_NONE, 0, 0, False
        if wt == 2 and 1 <= f <= 3:
            kind = f
            ls = a
            le = b
    return kind, ls, le, True


@njit(cache=True, nogil=True, inline="always")
def _put_varint(out, p, v):
    while v >= 0x80:
        out[p] = (v & 0x7F) | 0x80
        v >>= 7
        p += 1
    out[p] = v
    return p + 1


@njit(cache=True, nogil=True)
def frame_prefixes(feat_sizes):
    """The bytes that precede a frame's data in a FeatureList when it is encoded canonically (as every
    writer does): Feature tag + length, BytesList tag + length, value tag + length. Returns
    (prefix table [F, 16], lengths [F]). A frame whose bytes start with its feature's prefix holds
    exactly one value of the expected size, so the decoders can skip the general parse for it."""
    nf = feat_sizes.shape[0]
    tab = np.zeros((nf, 16), np.uint8)
    lens = np.zeros(nf, np.int64)
    tmp = np.zeros(16, np.uint8)
    for j in range(nf):
        size = feat_sizes[j]
        inner = _put_varint(tmp, 0, size) + 1                     # value: tag + varint(size)
        blist = inner + size                                      # BytesList length
        vb = _put_varint(tmp, 0, blist) + 1                       # bytes_list: tag + varint(blist)
        feat = vb + blist                                         # Feature length
        p = 0
        tab[j, p] = 0x0A
        p = _put_varint(tab[j], p + 1, feat)
        tab[j, p] = 0x0A
        p = _put_varint(tab[j], p + 1, blist)
        tab[j, p] = 0x0A
        p = _put_varint(tab[j], p + 1, size)
        lens[j] = p
    return tab, lens


@njit(cache=True, nogil=True, inline="always")
def _has_prefix(buf, p, end, tab, n, size):
    """Whether a canonically encoded frame of `size` bytes (prefix tab[:n]) starts at p."""
    if p + n + size > end:
        return False
    for i in range(n):
        if buf[p + i] != tab[i]:
            return False
    return True


@njit(cache=True, nogil=True)
def _count_values(buf, ls, le, kind):
    """Number of values in a BytesList / FloatList / Int64List span; -1 when malformed."""
    n = 0
    p = ls
    while p < le:
        f, wt, a, b, p = _next_field(buf, p, le)
        if p < 0:
            return -1
        if f != 1:
            continue
        if kind == KIND_BYTES and wt == 2:
            n += 1
        elif kind == KIND_FLOAT and wt == 5:
            n += 1
        elif kind == KIND_FLOAT and wt == 2:
            if (b - a) % 4 != 0:
                return -1
            n += (b - a) // 4
        elif kind == KIND_INT64 and wt == 0:
            n += 1
        elif kind == KIND_INT64 and wt == 2:
            q = a
            while q < b:
                _, q = _varint(buf, q, b)
                if q < 0:
                    return -1
                n += 1
        else:
            return -1
    return n


@njit(cache=True, nogil=True)
def _read_int64(buf, ls, le, out, o):
    p = ls
    while p < le:
        f, wt, a, b, p = _next_field(buf, p, le)
        if f != 1:
            continue
        if wt == 0:
            out[o] = b
            o += 1
        elif wt == 2:
            q = a
            while q < b:
                v, q = _varint(buf, q, b)
                out[o] = np.int64(v)
                o += 1
    return o


@njit(cache=True, nogil=True)
def _read_float_bytes(buf, ls, le, out_u8, o):
    """Copy float32 values (little endian) into a uint8 view of the output; o counts floats."""
    p = ls
    while p < le:
        f, wt, a, b, p = _next_field(buf, p, le)
        if f != 1:
            continue
        if wt == 5 or wt == 2:
            nb = b - a
            out_u8[4 * o:4 * o + nb] = buf[a:b]
            o += nb // 4
    return o


@njit(cache=True, nogil=True)
def _checked_kind(buf, s, e, want, key, r, err, aux):
    """(ok, kind, value span) of the Feature at [s, e): ok when it is of kind `want` or empty; else
    err/aux of record r are set (E_PROTO, or E_TYPE naming `key`)."""
    kind, ls, le, ok = _feature_kind(buf, s, e)
    if not ok:
        err[r] = E_PROTO
        return False, kind, ls, le
    if kind != want and kind != KIND_NONE:
        err[r] = E_TYPE
        aux[r, 0] = key
        aux[r, 1] = kind
        return False, kind, ls, le
    return True, kind, ls, le


@njit(cache=True, nogil=True)
def _typed_span(buf, vs, ve, r, k, want, err, aux, cnt):
    """Check that context key k of record r is of kind want; set cnt[r, k] to its value count."""
    if vs[r, k] < 0:
        cnt[r, k] = 0
        return True
    ok, kind, ls, le = _checked_kind(buf, vs[r, k], ve[r, k], want, k, r, err, aux)
    if not ok:
        return False
    vs[r, k] = ls
    ve[r, k] = le
    if kind == KIND_NONE:
        ve[r, k] = ls
        cnt[r, k] = 0
        return True
    n = _count_values(buf, ls, le, want)
    if n < 0:
        err[r] = E_PROTO
        return False
    cnt[r, k] = n
    return True


@njit(cache=True, nogil=True)
def _scan_fields(buf, s, e, sequence, ktab, koff, ftab, foff, vs, ve, fs, fe, r):
    """The spans of a record's context values (vs, ve) and features (fs, fe); False: malformed."""
    p = s
    while p < e:
        f, wt, a, b, p = _next_field(buf, p, e)
        if p < 0:
            return False
        if wt != 2:
            continue
        ok = True
        if f == 1:
            ok = _scan_map(buf, a, b, ktab, koff, vs, ve, r)
            if ok and not sequence:
                ok = _scan_map(buf, a, b, ftab, foff, fs, fe, r)
        elif f == 2 and sequence:
            ok = _scan_map(buf, a, b, ftab, foff, fs, fe, r)
        if not ok:
            return False
    return True


@njit(cache=True, nogil=True)
def _check_context(buf, vs, ve, cnt, r, err, aux, check_segments):
    """The id (exactly one bytes value, under "id" or the legacy "video_id"), the labels and (where
    checked) the three segment lists of equal length; False with err/aux set otherwise."""
    kid = K_ID if vs[r, K_ID] >= 0 else K_VIDEO_ID
    if vs[r, kid] < 0:
        err[r] = E_MISSING
        aux[r, 0] = K_ID
        return False
    if not _typed_span(buf, vs, ve, r, kid, KIND_BYTES, err, aux, cnt):
        return False
    if cnt[r, kid] != 1:
        err[r] = E_ID
        aux[r, 1] = cnt[r, kid]
        return False
    if kid == K_VIDEO_ID:  # normalise: the id's span lives under K_ID
        vs[r, K_ID] = vs[r, K_VIDEO_ID]
        ve[r, K_ID] = ve[r, K_VIDEO_ID]
        cnt[r, K_ID] = 1
    if not _typed_span(buf, vs, ve, r, K_LABELS, KIND_INT64, err, aux, cnt):
        return False
    if not check_segments:
        return True
    if not (_typed_span(buf, vs, ve, r, K_SEG_LABELS, KIND_INT64, err, aux, cnt)
            and _typed_span(buf, vs, ve, r, K_SEG_START, KIND_INT64, err, aux, cnt)
            and _typed_span(buf, vs, ve, r, K_SEG_SCORES, KIND_FLOAT, err, aux, cnt)):
        return False
    if cnt[r, K_SEG_LABELS] != cnt[r, K_SEG_START] or cnt[r, K_SEG_LABELS] != cnt[r, K_SEG_SCORES]:
        err[r] = E_SEG_LISTS
        aux[r, 0] = cnt[r, K_SEG_LABELS]
        aux[r, 1] = cnt[r, K_SEG_START]
        aux[r, 2] = cnt[r, K_SEG_SCORES]
        return False
    return True


@njit(cache=True, nogil=True)
def _count_frames(buf, p, q_end, j, prefix, prefix_len, size, err, aux, r):
    """The frames of feature list j (repeated Feature, field 1, each a bytes_list of one `size`-byte
    string); -1 with err/aux set when one is not."""
    t = 0
    while p < q_end:
        if _has_prefix(buf, p, q_end, prefix, prefix_len, size):  # the common case
            p += prefix_len + size
            t += 1
            continue
        f, wt, a, b, p = _next_field(buf, p, q_end)
        if p < 0:
            err[r] = E_PROTO
            return -1
        if f != 1 or wt != 2:
            continue
        kind, ls, le, ok2 = _feature_kind(buf, a, b)
        if not ok2:
            err[r] = E_PROTO
            return -1
        if kind != KIND_BYTES:
            err[r] = E_TYPE
            aux[r, 0] = K_FEATURE0 + j
            aux[r, 1] = kind
            return -1
        nv = 0
        blen = 0
        pp = ls
        while pp < le:
            g, wt3, c, d, pp = _next_field(buf, pp, le)
            if pp < 0:
                break
            if g == 1 and wt3 == 2:
                nv += 1
                blen = d - c
        if pp < 0:
            err[r] = E_PROTO
            return -1
        if nv != 1 or blen != size:
            err[r] = E_FRAME_VALUES if nv != 1 else E_FRAME_LEN
            aux[r, 0] = j
            aux[r, 1] = t
            aux[r, 2] = nv if nv != 1 else blen
            return -1
        t += 1
    return t


@njit(cache=True, nogil=True)
def _video_feature(buf, r, j, fs, fe, size, err, aux):
    """Video-level feature j: a float list of `size` values (its span narrowed to them); False with
    err/aux set otherwise."""
    ok, kind, ls, le = _checked_kind(buf, fs[r, j], fe[r, j], KIND_FLOAT, K_FEATURE0 + j, r, err, aux)
    if not ok:
        return False
    m = _count_values(buf, ls, le, KIND_FLOAT) if kind == KIND_FLOAT else 0
    if m < 0:
        err[r] = E_PROTO
        return False
    if m != size:
        err[r] = E_VIDEO_LEN
        aux[r, 0] = K_FEATURE0 + j
        aux[r, 1] = m
        return False
    fs[r, j] = ls
    fe[r, j] = le
    return True


@njit(cache=True, nogil=True)
def locate_and_count(buf, offs, lens, status, sequence, ktab, koff, ftab, foff, feat_sizes, num_classes,
                     check_segments):
    """Pass 1 over a batch of records.

    sequence: records are SequenceExamples with frame feature lists named by ftab/foff (True), or
    Examples with float video features named by ftab/foff (False).
    Returns err [n], aux [n, 3], ctx value spans (vs, ve) [n, K], counts cnt [n, K], frame-list spans
    (fs, fe) [n, F] and per-feature frame counts nfr [n, F].
    """
    n = offs.shape[0]
    nk = koff.shape[0] - 1
    nf = foff.shape[0] - 1
    err = np.zeros(n, np.int32)
    aux = np.zeros((n, 3), np.int64)
    vs = np.full((n, nk), -1, np.int64)
    ve = np.full((n, nk), -1, np.int64)
    cnt = np.zeros((n, nk), np.int64)
    fs = np.full((n, nf), -1, np.int64)
    fe = np.full((n, nf), -1, np.int64)
    nfr = np.zeros((n, nf), np.int64)
    ptab, plen = frame_prefixes(feat_sizes)
    for r in range(n):
        if status[r] != 0:
            err[r] = status[r]
            continue
        if not _scan_fields(buf, offs[r], offs[r] + lens[r], sequence, ktab, koff, ftab, foff, vs, ve, fs, fe, r):
            err[r] = E_PROTO
            continue
        if not _check_context(buf, vs, ve, cnt, r, err, aux, check_segments):
            continue
        for j in range(nf):
            if fs[r, j] < 0:
                err[r] = E_MISSING
                aux[r, 0] = K_FEATURE0 + j
                break
            if sequence:
                t = _count_frames(buf, fs[r, j], fe[r, j], j, ptab[j], plen[j], feat_sizes[j], err, aux, r)
                if t < 0:
                    break
                nfr[r, j] = t
            elif not _video_feature(buf, r, j, fs, fe, feat_sizes[j], err, aux):
                break
    return err, aux, vs, ve, cnt, fs, fe, nfr


@njit(cache=True, nogil=True)
def check_values(buf, err, aux, vs, ve, cnt, nfr, num_classes, check_segments, lab_tmp, seg_tmp):
    """Range checks on class ids and segment start times (needs the decoded values)."""
    n = err.shape[0]
    for r in range(n):
        if err[r] != 0:
            continue
        m = _read_int64(buf, vs[r, K_LABELS], ve[r, K_LABELS], lab_tmp, 0)
        for i in range(m):
            if lab_tmp[i] < 0 or lab_tmp[i] >= num_classes:
                err[r] = E_CLASS
                aux[r, 0] = K_LABELS
                aux[r, 1] = lab_tmp[i]
                break
        if err[r] != 0 or not check_segments:
            continue
        m = _read_int64(buf, vs[r, K_SEG_LABELS], ve[r, K_SEG_LABELS], lab_tmp, 0)
        for i in range(m):
            if lab_tmp[i] < 0 or lab_tmp[i] >= num_classes:
                err[r] = E_CLASS
                aux[r, 0] = K_SEG_LABELS
                aux[r, 1] = lab_tmp[i]
                break
        if err[r] != 0:
            continue
        frames = nfr[r, 0] if nfr.shape[1] > 0 else 0
        m = _read_int64(buf, vs[r, K_SEG_START], ve[r, K_SEG_START], seg_tmp, 0)
        for i in range(m):
            if seg_tmp[i] < 0 or (nfr.shape[1] > 0 and seg_tmp[i] >= frames):
                err[r] = E_SEG_START
                aux[r, 1] = seg_tmp[i]
                aux[r, 2] = frames
                break


@njit(cache=True, nogil=True)
def fill(buf, err, vs, ve, fs, fe, sequence, feat_sizes, max_frames, rows,
         lab_off, labels, seg_off, seg_labels, seg_starts, seg_scores_u8, id_off, id_bytes, id_len,
         frame_off, num_frames, frames, video_u8, check_segments, copy_frames):
    """Pass 2: copy the values of the records with err == 0 into the outputs.

    rows[r] is record r's output row (-1 for skipped records); the CSR offsets are per output row.
    Frames go to a flat [rows, D] array: row frame_off[i] + t holds frame t < num_frames[i] of video i;
    rows from num_frames[i] up to frame_off[i + 1] (padding to a segment multiple) are zeroed.
    """
    n = err.shape[0]
    nf = feat_sizes.shape[0]
    ptab, plen = frame_prefixes(feat_sizes)
    for r in range(n):
        i = rows[r]
        if i < 0:
            continue
        # id
        a = vs[r, K_ID]
        b = ve[r, K_ID]
        p = a
        while p < b:
            f, wt, c, d, p = _next_field(buf, p, b)
            if f == 1 and wt == 2:
                id_bytes[id_off[i]:id_off[i] + (d - c)] = buf[c:d]
                id_len[i] = d - c
        _read_int64(buf, vs[r, K_LABELS], ve[r, K_LABELS], labels, lab_off[i])
        if check_segments:
            _read_int64(buf, vs[r, K_SEG_LABELS], ve[r, K_SEG_LABELS], seg_labels, seg_off[i])
            _read_int64(buf, vs[r, K_SEG_START], ve[r, K_SEG_START], seg_starts, seg_off[i])
            _read_float_bytes(buf, vs[r, K_SEG_SCORES], ve[r, K_SEG_SCORES], seg_scores_u8, seg_off[i])
        col = 0
        for j in range(nf):
            size = feat_sizes[j]
            if sequence:
                if copy_frames:
                    p = fs[r, j]
                    q_end = fe[r, j]
                    t = 0
                    t_end = num_frames[i]
                    while p < q_end and t < t_end:
                        if _has_prefix(buf, p, q_end, ptab[j], plen[j], size):  # the common case
                            a = p + plen[j]
                            copy_into(frames[frame_off[i] + t, col:col + size], buf[a:a + size])
                            p = a + size
                            t += 1
                            continue
                        f, wt, c, d, p = _next_field(buf, p, q_end)
                        if f != 1 or wt != 2:
                            continue
                        kind, ls, le, ok = _feature_kind(buf, c, d)
                        pp = ls
                        while pp < le:
                            g, wt3, c2, d2, pp = _next_field(buf, pp, le)
                            if g == 1 and wt3 == 2:
                                copy_into(frames[frame_off[i] + t, col:col + size], buf[c2:d2])
                        t += 1
            else:
                _read_float_bytes(buf, fs[r, j], fe[r, j], video_u8[i], col)
            col += size
        if sequence and copy_frames:
            for row in range(frame_off[i] + num_frames[i], frame_off[i + 1]):
                frames[row, :] = 0


# ---------------------------------------------------------------------------------------------
# Encoding (Python): byte-for-byte what protobuf writes for these messages, map keys sorted.

def _enc_varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _enc_varint((field << 3) | 2) + _enc_varint(len(payload)) + payload


def feature_bytes(values) -> bytes:
    return _ld(1, b"".join(_ld(1, v) for v in values))


def feature_int64(values) -> bytes:
    vals = [int(v) for v in values]
    return _ld(3, _ld(1, b"".join(_enc_varint(v) for v in vals)) if vals else b"")


def feature_float(values) -> bytes:
    arr = np.ascontiguousarray(values, dtype="<f4")
    return _ld(2, _ld(1, arr.tobytes()) if arr.size else b"")


def features(feats: dict) -> bytes:
    """A Features message from {key: encoded Feature}."""
    return b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, v)) for k, v in sorted(feats.items()))


def frame_feature_list(frames: np.ndarray) -> bytes:
    """A FeatureList of one bytes_list Feature per row of a uint8 [T, size] array (vectorised)."""
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    t, size = frames.shape
    tab, lens = frame_prefixes(np.array([size], np.int64))
    prefix = tab[0, :lens[0]]
    out = np.empty((t, prefix.size + size), np.uint8)
    out[:, :prefix.size] = prefix
    out[:, prefix.size:] = frames
    return out.tobytes()


def example(feats: dict) -> bytes:
    return _ld(1, features(feats))


def sequence_example(context: dict, feature_lists: dict) -> bytes:
    """context: {key: encoded Feature}; feature_lists: {key: encoded FeatureList body}."""
    fl = b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, v)) for k, v in sorted(feature_lists.items()))
    return _ld(1, features(context)) + _ld(2, fl)
