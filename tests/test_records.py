"""Records written without TensorFlow are read by TensorFlow's own parsers."""

import io

import pytest
import tensorflow as tf

from common import records


def test_image_example_parses_with_tensorflow_to_the_same_values():
    data = records.image_example(
        jpeg=b"\xff\xd8jpeg bytes\xff\xd9", height=375, width=500, filename="cat/ünï.jpg",
        label=3, text="cat",
    )  # fmt: skip
    feature = tf.train.Example.FromString(data).features.feature
    assert feature[records.KEY_ENCODED].bytes_list.value == [b"\xff\xd8jpeg bytes\xff\xd9"]
    assert feature[records.KEY_HEIGHT].int64_list.value == [375]
    assert feature[records.KEY_WIDTH].int64_list.value == [500]
    assert feature[records.KEY_CHANNELS].int64_list.value == [3]
    assert feature[records.KEY_COLORSPACE].bytes_list.value == [b"RGB"]
    assert feature[records.KEY_FORMAT].bytes_list.value == [b"JPEG"]
    assert feature[records.KEY_FILENAME].bytes_list.value == ["cat/ünï.jpg".encode()]
    assert feature[records.KEY_LABEL].int64_list.value == [3]
    assert feature[records.KEY_TEXT].bytes_list.value == [b"cat"]


def test_negative_and_large_integers_round_trip():
    data = records.encode_example({"a": -1, "b": 2**40})
    feature = tf.train.Example.FromString(data).features.feature
    assert feature["a"].int64_list.value == [-1]
    assert feature["b"].int64_list.value == [2**40]


def test_framed_records_read_back_with_tf_data_and_damage_is_caught(tmp_path):
    path = tmp_path / "shard"
    payloads = [b"", b"x" * 300, b"last"]
    path.write_bytes(b"".join(records.frame_record(p) for p in payloads))
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == payloads
    assert list(records.iter_records(io.BytesIO(path.read_bytes()))) == payloads

    damaged = bytearray(path.read_bytes())
    damaged[30] ^= 0xFF
    with pytest.raises(ValueError, match="corrupt"):
        list(records.iter_records(io.BytesIO(bytes(damaged))))
    with pytest.raises(ValueError, match="truncated"):
        list(records.iter_records(io.BytesIO(path.read_bytes()[:-3])))
