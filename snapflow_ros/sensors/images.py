"""Image decoding for camera topics (cv_bridge's job, which is not installable here).

Raw images (sensor_msgs/Image fields) in rgb8 / bgr8 / mono8 and compressed images
(sensor_msgs/CompressedImage) in jpeg / png become H x W x 3 uint8 RGB arrays.
"""

from __future__ import annotations

import io

import numpy as np

from snapflow_ros.errors import InputError

RAW_ENCODINGS = ("rgb8", "bgr8", "mono8")


def decode_raw(encoding: str, height: int, width: int, step: int, data: bytes, source: str) -> np.ndarray:
    """sensor_msgs/Image fields -> (height, width, 3) uint8 RGB. `source` names the topic in errors."""
    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}.get(encoding)
    if channels is None:
        raise InputError(f"{source}: encoding '{encoding}' not supported (use one of {list(RAW_ENCODINGS)})")
    if height <= 0 or width <= 0 or step < width * channels:
        raise InputError(f"{source}: inconsistent image geometry height={height} width={width} step={step}")
    # sensor_msgs/Image: data is exactly step * height bytes. Fewer is a truncated frame; more means
    # height, step or encoding do not describe the data (another camera mode, a mislabelled topic).
    if len(data) != step * height:
        kind = "truncated" if len(data) < step * height else "larger than its header says"
        raise InputError(f"{source}: data has {len(data)} bytes, step*height is {step * height} "
                         f"(height={height}, step={step}): frame {kind}")
    rows = np.frombuffer(data, dtype=np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if encoding == "bgr8":
        pixels = pixels[..., ::-1]
    elif encoding == "mono8":
        pixels = np.repeat(pixels, 3, axis=2)
    return np.ascontiguousarray(pixels)


def decode_compressed(format_: str, data: bytes, source: str) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg or png, also "rgb8; jpeg compressed bgr8") -> RGB uint8."""
    from PIL import Image, UnidentifiedImageError

    kind = format_.lower()
    if not any(name in kind for name in ("jpeg", "jpg", "png")):
        raise InputError(f"{source}: compressed format '{format_}' not supported (jpeg or png)")
    try:
        with Image.open(io.BytesIO(bytes(data))) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError:  # (its message names a BytesIO object: new text every frame)
        raise InputError(f"{source}: cannot decode {format_} data ({len(data)} bytes are not an image "
                         f"PIL recognises)") from None
    except (OSError, SyntaxError, ValueError) as error:  # truncated or corrupt after a valid header
        raise InputError(f"{source}: cannot decode {format_} data ({len(data)} bytes: {error})") from None


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8") -> tuple[int, int, int, bytes]:
    """(height, width, step, data) of an RGB array in `encoding` (fake cameras, tests, recorders)."""
    if encoding == "bgr8":
        rgb = rgb[..., ::-1]
    elif encoding == "mono8":
        rgb = rgb.mean(axis=2, keepdims=True).astype(np.uint8)
    elif encoding != "rgb8":
        raise InputError(f"encoding '{encoding}' not supported (use one of {list(RAW_ENCODINGS)})")
    height, width, channels = rgb.shape
    return height, width, width * channels, np.ascontiguousarray(rgb).tobytes()


def encode_compressed(rgb: np.ndarray, format_: str = "jpeg") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG" if format_ in ("jpeg", "jpg") else "PNG")
    return buffer.getvalue()
