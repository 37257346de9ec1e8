"""Camera decoding (raw rgb8/bgr8/mono8, compressed jpeg/png) and stamp-checked observation
assembly: the node's inputs never reach a policy stale, missing, non-finite or mis-shaped."""

from __future__ import annotations

import numpy as np
import pytest

from snapflow_ros.errors import HoldError, InputError
from snapflow_ros.sensors.assembly import ObservationAssembler
from snapflow_ros.sensors.images import decode_compressed, decode_raw, encode_compressed, encode_raw

RGB = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_raw_color_round_trip(encoding):
    height, width, step, data = encode_raw(RGB, encoding)
    np.testing.assert_array_equal(decode_raw(encoding, height, width, step, data, "cam"), RGB)


def test_mono_becomes_gray_rgb_and_row_padding_is_skipped():
    gray = RGB[..., 0]
    padded = np.zeros((6, 8), dtype=np.uint8)  # step 8 > width 5: padding bytes at each row end
    padded[:, :5] = gray
    image = decode_raw("mono8", 6, 5, 8, padded.tobytes(), "cam")
    assert image.shape == (6, 5, 3)
    np.testing.assert_array_equal(image[..., 2], gray)


def test_bad_raw_images_name_topic_and_problem():
    with pytest.raises(InputError, match="front/image_raw: encoding '16UC1' not supported"):
        decode_raw("16UC1", 6, 5, 10, b"\0" * 60, "front/image_raw")
    with pytest.raises(InputError, match="front/image_raw: data has 10 bytes"):
        decode_raw("rgb8", 6, 5, 15, b"\0" * 10, "front/image_raw")


def test_compressed_png_is_exact_and_jpeg_close():
    np.testing.assert_array_equal(decode_compressed("png", encode_compressed(RGB, "png"), "cam"), RGB)
    smooth = np.full((16, 16, 3), 120, dtype=np.uint8)
    decoded = decode_compressed("rgb8; jpeg compressed bgr8", encode_compressed(smooth, "jpeg"), "cam")
    assert np.abs(decoded.astype(int) - 120).max() <= 3
    with pytest.raises(InputError, match="wrist/compressed: cannot decode jpeg"):
        decode_compressed("jpeg", b"not an image", "wrist/compressed")
    with pytest.raises(InputError, match="format 'tiff' not supported"):
        decode_compressed("tiff", b"", "cam")


def _assembler() -> ObservationAssembler:
    return ObservationAssembler(cameras=("front",), joint_names=("a", "b"), max_age_s=0.5,
                                image_shapes={"front": (6, 5)}, instruction="pick")


NOW = 10_000_000_000


def test_valid_inputs_assemble_with_the_oldest_stamp():
    assembler = _assembler()
    assembler.update_image("front", NOW - 200_000_000, RGB)
    assembler.update_joints(NOW - 100_000_000, np.array([0.1, 0.2]))
    observation = assembler.assemble(NOW)
    assert observation.stamp_ns == NOW - 200_000_000
    assert observation.instruction == "pick" and observation.images["front"].shape == (6, 5, 3)
    assert assembler.ages_s(NOW)["camera:front"] == pytest.approx(0.2)


def test_inputs_are_in_step_once_every_one_of_a_moment_has_arrived():
    assembler = _assembler()
    assembler.update_image("front", NOW, RGB)
    assert not assembler.in_step(0.025)  # no joint state yet
    assembler.update_joints(NOW - 50_000_000, np.array([0.1, 0.2]))
    assert not assembler.in_step(0.025)  # the previous tick's joint state
    assembler.update_joints(NOW, np.array([0.1, 0.2]))
    assert assembler.in_step(0.025)
    assembler.update_image("front", NOW + 20_000_000, RGB)
    assert assembler.in_step(0.025) and not assembler.in_step(0.01)


@pytest.mark.parametrize("break_it, reason", [
    (lambda a: a.update_joints(NOW, np.array([0.1, 0.2])), r"no message yet on \['camera:front'\]"),
    (lambda a: (a.update_image("front", NOW - 900_000_000, RGB), a.update_joints(NOW, np.array([0.1, 0.2]))),
     "camera:front is stale: 0.900 s old"),
    (lambda a: (a.update_image("front", NOW + 2_000_000_000, RGB), a.update_joints(NOW, np.array([0.1, 0.2]))),
     "in the future"),
    (lambda a: (a.update_image("front", NOW, RGB), a.update_joints(NOW, np.array([0.1, np.nan]))), "NaN"),
    (lambda a: (a.update_image("front", NOW, RGB[:4]), a.update_joints(NOW, np.array([0.1, 0.2]))),
     r"camera:front image has shape \(4, 5, 3\)"),
    (lambda a: (a.update_image("front", NOW, RGB), a.update_joints(NOW, np.array([0.1, 0.2])),
                a.set_instruction("")), "no task instruction"),
], ids=["missing", "stale", "future", "nan", "shape", "instruction"])
def test_invalid_inputs_hold_with_a_reason(break_it, reason):
    assembler = _assembler()
    break_it(assembler)
    with pytest.raises(HoldError, match=reason):
        assembler.assemble(NOW)


def test_an_invalid_newest_message_holds_instead_of_using_an_older_one():
    assembler = _assembler()
    assembler.update_image("front", NOW, RGB)
    assembler.update_joints(NOW - 100_000_000, np.array([0.1, 0.2]))
    assembler.assemble(NOW)
    assembler.invalidate("joint_states", NOW, "joint_states: non-finite 'position' for joints ['a']")
    with pytest.raises(HoldError, match="non-finite"):
        assembler.assemble(NOW)
    assembler.update_joints(NOW, np.array([0.1, 0.2]))
    assert assembler.assemble(NOW).state.tolist() == [0.1, 0.2]
