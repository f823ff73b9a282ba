"""tf.data input over the same TFRecords: video-level, frame-level and rated-segment examples.

Each element is (inputs, labels [C], weights): inputs are {"features"} or {"frames" uint8 [T, D],
"num_frames"}; labels are uint8 0/1 (float32 for segment examples: the rated class's score), cast to
float in the training step (a float batch was 16 MB at batch 1024; with its parse's float scatter, video-level MoE's
peak RSS at batch 1024 fell from 1.9-2.05 GB to 1.67 GB); weights are [1] of 1 (every class counts:
a batch carries no [B, C] of ones) except for segment examples, [C] where only the rated class counts.
"""
from __future__ import annotations

from .quiet_tf import tf

from .. import format as fmt
from .config import ModelConfig


def _dense(labels, num_classes):
    labels = tf.boolean_mask(labels, (labels >= 0) & (labels < num_classes))
    return tf.reduce_max(tf.one_hot(labels, num_classes, dtype=tf.uint8), axis=0) if num_classes else labels


def _labels(sparse, num_classes):
    v = sparse.values if isinstance(sparse, tf.SparseTensor) else sparse
    return tf.cond(tf.size(v) > 0, lambda: _dense(v, num_classes), lambda: tf.zeros([num_classes], tf.uint8))


def _frame_parser(cfg: ModelConfig, segments: bool):
    ctx = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    if segments:
        ctx.update({"segment_labels": tf.io.VarLenFeature(tf.int64),
                    "segment_start_times": tf.io.VarLenFeature(tf.int64),
                    "segment_scores": tf.io.VarLenFeature(tf.float32)})
    seq = {n: tf.io.FixedLenSequenceFeature([], tf.string) for n in cfg.feature_names}

    def parse(record):
        c, s = tf.io.parse_single_sequence_example(record, context_features=ctx, sequence_features=seq)
        feats = [tf.reshape(tf.io.decode_raw(s[n], tf.uint8), [-1, size])
                 for n, size in zip(cfg.feature_names, cfg.feature_sizes)]
        n = tf.shape(feats[0])[0]
        feats = [f[:n] for f in feats]
        frames = tf.concat(feats, axis=1)[: cfg.max_frames]
        out = {"frames": frames, "num_frames": tf.shape(frames)[0], "labels": _labels(c["labels"], cfg.num_classes)}
        if segments:
            out["segment_labels"] = c["segment_labels"].values
            out["segment_start_times"] = c["segment_start_times"].values
            out["segment_scores"] = c["segment_scores"].values
        return out

    return parse


def _video_parser(cfg: ModelConfig):
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    spec.update({n: tf.io.FixedLenFeature([s], tf.float32) for n, s in zip(cfg.feature_names, cfg.feature_sizes)})

    def parse(record):
        e = tf.io.parse_single_example(record, spec)
        feats = tf.concat([e[n] for n in cfg.feature_names], axis=0)
        return ({"features": feats}, _labels(e["labels"], cfg.num_classes), tf.ones([1]))

    return parse


def _video_batch_parser(cfg: ModelConfig):
    """A batch of video-level records parsed at once (tf.io.parse_example over the batch, as the starter's
    video reader): one op a batch instead of a parse a record."""
    spec = {"labels": tf.io.VarLenFeature(tf.int64)}
    spec.update({n: tf.io.FixedLenFeature([s], tf.float32) for n, s in zip(cfg.feature_names, cfg.feature_sizes)})

    def parse(records):
        e = tf.io.parse_example(records, spec)
        feats = tf.concat([e[n] for n in cfg.feature_names], axis=1)
        rows, vals = e["labels"].indices[:, 0], e["labels"].values
        ok = (vals >= 0) & (vals < cfg.num_classes)
        ind = tf.stack([tf.boolean_mask(rows, ok), tf.boolean_mask(vals, ok)], axis=1)
        n = tf.shape(records, out_type=tf.int64)[0]
        labels = tf.minimum(tf.scatter_nd(ind, tf.ones(tf.shape(ind)[:1], tf.uint8), [n, cfg.num_classes]), 1)
        return {"features": feats}, labels, tf.ones([n, 1])

    return parse


def _segments(cfg: ModelConfig):
    size = fmt.SEGMENT_SIZE

    def expand(ex):
        frames = ex["frames"]
        n = ex["num_frames"]

        def one(start, label, score):
            start = tf.cast(start, tf.int32)
            seg = frames[start:start + size]
            m = tf.shape(seg)[0]
            seg = tf.pad(seg, [[0, size - m], [0, 0]])
            onehot = tf.one_hot(label, cfg.num_classes, dtype=tf.float32)
            return ({"frames": seg, "num_frames": m}, onehot * tf.cast(score > 0.5, tf.float32), onehot)

        keep = ex["segment_start_times"] < tf.cast(n, tf.int64)
        return tf.data.Dataset.from_tensor_slices((tf.boolean_mask(ex["segment_start_times"], keep),
                                                   tf.boolean_mask(ex["segment_labels"], keep),
                                                   tf.boolean_mask(ex["segment_scores"], keep))).map(one)

    return expand


def _host_parser(cfg: ModelConfig, skip_corrupt: bool, host, errors: list, seed: int):
    """A batch of serialized frame-level records parsed by the project's Numba reader (io.reader, no
    TensorFlow: 11-14x tf.io.parse_single_sequence_example's speed) and handed to `host` (a
    models.HostInput: a backbone's work on the host) for the model's inputs. Measured at batch 64 on 2
    cores: tf.data's parse took 9-10 ms a batch, FrameLevelLogistic's mean over the frames as a layer
    14 ms under XLA (25 ms without), kernels.dequant.mean_frames 1.2 ms. A bad record's problem (the
    reader's words; shuffled records have no file to name) goes to `errors` before TensorFlow stops the
    input. Each batch's random draws come from its own generator, seeded by `seed` and the batch's number
    (tf.data may parse batches on several threads at once)."""
    import itertools
    import re

    import numpy as np

    from ..errors import Yt8mError
    from ..io.reader import Reader

    # (tf.data's TFRecordDataset checked the CRCs; class ids from --num_classes up are left out by
    # dense_labels, as the video-level parse does: fine-tuning on the first classes; a negative one is a bad record)
    reader = Reader(cfg.feature_spec, max_frames=cfg.max_frames, num_classes=2 ** 62, skip_corrupt=skip_corrupt,
                    check_crc=False)
    names = list(host.spec)
    batches = itertools.count()

    def parse(records):
        lens = np.fromiter(map(len, records), np.int64, len(records))
        offs = np.zeros(len(records), np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        buf = np.frombuffer(b"".join(records), np.uint8)
        try:
            b = reader.parse_records(buf, offs, lens, np.zeros(len(records), np.int32), "", 0)
        except Yt8mError as e:
            errors.append(re.sub(r"^: record \d+: ", "", str(e)))
            raise ValueError(errors[-1]) from None
        rng = np.random.default_rng([seed % 2 ** 63, next(batches)])  # (--seed may be negative)
        inputs = host.fn(b.frames, b.frame_offsets, b.num_frames, rng)
        return [*(inputs[n] for n in names), b.dense_labels(cfg.num_classes, np.uint8)]

    def tf_parse(records):
        out = tf.numpy_function(parse, [records], [*(host.spec[n][0] for n in names), tf.uint8], stateful=True)
        inputs = {n: tf.ensure_shape(t, host.spec[n][1]) for n, t in zip(names, out)}
        return inputs, tf.ensure_shape(out[-1], [None, cfg.num_classes]), tf.ones([tf.shape(out[-1])[0], 1])

    return tf_parse


def make_dataset(files: list[str], cfg: ModelConfig, batch_size: int, *, segments: bool = False,
                 training: bool = True, num_epochs: int | None = 1, seed: int = 0, shuffle_buffer: int = 4096,
                 segment_buffer: int | None = None,
                 drop_remainder: bool = False, skip_corrupt: bool = False, frame_multiple: int = 1,
                 readers: int = 4, host=None, errors: list | None = None) -> tf.data.Dataset:
    """Batches of (inputs, labels, weights) from TFRecord files (parallel reads, seeded shuffle); frame-level
    batches padded to a multiple of `frame_multiple` frames.

    Memory is bounded: the shuffle buffer holds `shuffle_buffer` serialized records (the trainer sizes it
    from a byte budget, see io.framing.mean_record_bytes), and at most two finished batches wait ahead of the model
    (a frame-level batch of 1024 videos of 300 frames is 354 MB of uint8).

    host: a models.HostInput (a backbone's work on the host): frame-level batches are then parsed by the
    Numba reader and handed to it, the batch's inputs what it returns (not with segments); errors: a list
    that receives the reader's description of a bad record there."""
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=max(1, min(readers, len(files))),
                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if training and num_epochs != 1:
        ds = ds.repeat(num_epochs)
    if not cfg.frame_features:
        if not skip_corrupt:  # batches parsed at once; a bad record stops the run (one line, see trainer)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            return ds.map(_video_batch_parser(cfg), num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=True).prefetch(2)
        ds = ds.map(_video_parser(cfg), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.ignore_errors(log_warning=True)  # record by record: a bad one is dropped alone
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)
    if host is not None and not segments:
        if skip_corrupt:  # (a damaged record's CRC: dropped here; a bad record: by the reader, counted)
            ds = ds.ignore_errors(log_warning=True)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        parse = _host_parser(cfg, skip_corrupt, host, [] if errors is None else errors, seed)
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    ds = ds.map(_frame_parser(cfg, segments), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if skip_corrupt:  # bad records (CRC, schema) are dropped with a warning instead of stopping the run
        ds = ds.ignore_errors(log_warning=True)
    if segments:
        ds = ds.flat_map(_segments(cfg))
        if training:
            ds = ds.shuffle(segment_buffer or shuffle_buffer, seed=seed + 1)
    else:
        ds = ds.map(lambda ex: ({"frames": ex["frames"], "num_frames": ex["num_frames"]}, ex["labels"],
                                tf.ones([1])))
    d = sum(cfg.feature_sizes)
    ds = ds.padded_batch(batch_size, padded_shapes=({"frames": [None, d], "num_frames": []}, [cfg.num_classes],
                                                    [cfg.num_classes if segments else 1]),
                         drop_remainder=drop_remainder)
    if frame_multiple > 1:  # a few distinct frame counts (XLA compiles each shape once)
        def pad(inputs, labels, weights):
            t = tf.shape(inputs["frames"])[1]
            extra = (frame_multiple - t % frame_multiple) % frame_multiple
            return {"frames": tf.pad(inputs["frames"], [[0, 0], [0, extra], [0, 0]]),
                    "num_frames": inputs["num_frames"]}, labels, weights

        ds = ds.map(pad, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)
