"""Reading images and masks of every supported encoding; pixel digests."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from PIL import Image

from scratchlab.data.io import (file_digest, file_digests, image_header, image_info, list_images, low_bits_max,
                                read_image, read_mask)
from scratchlab.errors import DataError

RNG = np.random.default_rng(0)


def _gray(h: int = 13, w: int = 7) -> np.ndarray:
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "tiff"])
def test_grayscale_odd_size_lossless(tmp_path, ext):
    gray = _gray()
    path = tmp_path / f"g.{ext}"
    Image.fromarray(gray, "L").save(path)
    img = read_image(path)
    assert img.shape == (13, 7, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[:, :, c], gray)


def test_rgb_keeps_channel_order_and_jpeg_reads(tmp_path):
    rgb = np.zeros((9, 11, 3), np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb, "RGB").save(tmp_path / "a.png")
    Image.fromarray(rgb, "RGB").save(tmp_path / "a.jpeg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    jpg = read_image(tmp_path / "a.jpeg").astype(int)
    assert jpg.shape == (9, 11, 3) and abs(jpg[..., 0].mean() - 200) < 4 and jpg[..., 2].mean() < 4


def test_rgba_drops_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


def test_palette_image_reads_colours(tmp_path):
    p = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    p.putpalette([0, 0, 0, 10, 20, 30])
    p.save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img[0, 1].tolist() == [10, 20, 30] and img[0, 0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_16bit_scaled_by_dtype_range(tmp_path, ext):
    g16 = RNG.integers(0, 65536, (6, 5), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / f"g.{ext}"), g16)
    rgb16 = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / f"c.{ext}"), rgb16[..., ::-1])  # OpenCV writes BGR
    np.testing.assert_array_equal(read_image(tmp_path / f"g.{ext}")[..., 1], g16 >> 8)
    np.testing.assert_array_equal(read_image(tmp_path / f"c.{ext}"), (rgb16 >> 8).astype(np.uint8))


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_low_bits_found_and_read_by_the_16bit_range(tmp_path, ext):
    g12 = RNG.integers(0, 4096, (6, 5), dtype=np.uint16)
    g12[0, 0] = 4095
    cv2.imwrite(str(tmp_path / f"g12.{ext}"), g12)
    cv2.imwrite(str(tmp_path / f"c12.{ext}"), np.dstack([g12, g12 // 4, g12 // 2]))
    cv2.imwrite(str(tmp_path / f"g16.{ext}"), g12 * 16)
    cv2.imwrite(str(tmp_path / f"g8.{ext}"), (g12 >> 4).astype(np.uint8))
    assert low_bits_max(tmp_path / f"g12.{ext}") == 15 and low_bits_max(tmp_path / f"c12.{ext}") == 15
    assert low_bits_max(tmp_path / f"g16.{ext}") is None and low_bits_max(tmp_path / f"g8.{ext}") is None
    # the read rule stays the dtype's range, never the pixels' own: 12-bit data reads 0-15 of 255
    np.testing.assert_array_equal(read_image(tmp_path / f"g12.{ext}")[..., 0], g12 >> 8)
    np.testing.assert_array_equal(read_image(tmp_path / f"g16.{ext}"), read_image(tmp_path / f"g8.{ext}"))
    with pytest.raises(DataError, match="nothere.png"):
        low_bits_max(tmp_path / "nothere.png")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_truncated_and_missing_raise_naming_file(tmp_path, ext):
    path = tmp_path / f"broken.{ext}"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="broken"):
        read_image(path)
    with pytest.raises(DataError, match="broken"):
        read_mask(path)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    with pytest.raises(DataError, match="nothere.png"):
        file_digest(tmp_path / "nothere.png")


def _square(value: int, dtype=np.uint8) -> np.ndarray:
    m = np.zeros((8, 10), dtype)
    m[2:5, 3:7] = value
    return m


def test_mask_0_255_and_label_map_0_1(tmp_path):
    Image.fromarray(_square(255), "L").save(tmp_path / "a.png")
    Image.fromarray(_square(1), "L").save(tmp_path / "b.png")
    for name in ("a.png", "b.png"):
        m = read_mask(tmp_path / name)
        assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 1}
        np.testing.assert_array_equal(m, _square(1))


def test_mask_palette_uses_indices(tmp_path):
    p = Image.fromarray(_square(1), "P")
    p.putpalette([0, 0, 0, 128, 0, 0])  # VOC-like dark red: colour max would be 128
    p.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "p.png", threshold=200), _square(1))


def test_mask_16bit(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _square(65535, np.uint16))
    soft = _square(40000, np.uint16)  # >> 8 = 156
    soft[0, 0] = 20000  # >> 8 = 78
    cv2.imwrite(str(tmp_path / "s.png"), soft)
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png"), _square(1))
    np.testing.assert_array_equal(read_mask(tmp_path / "s.png", threshold=128), _square(1))
    assert read_mask(tmp_path / "s.png", threshold=70)[0, 0] == 1


def test_soft_mask_threshold_is_configurable(tmp_path):
    m = np.array([[0, 60, 127, 128, 200, 255]], np.uint8)
    Image.fromarray(m, "L").save(tmp_path / "soft.png")
    assert read_mask(tmp_path / "soft.png").tolist() == [[0, 0, 0, 1, 1, 1]]
    assert read_mask(tmp_path / "soft.png", threshold=50).tolist() == [[0, 1, 1, 1, 1, 1]]


def test_rgb_and_rgba_masks_any_channel(tmp_path):
    rgb = np.zeros((8, 10, 3), np.uint8)
    rgb[2:5, 3:7, 0] = 255  # red only
    Image.fromarray(rgb, "RGB").save(tmp_path / "rgb.png")
    rgba = np.dstack([rgb, np.full((8, 10), 255, np.uint8)])  # opaque alpha must not count
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), _square(1))
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png"), _square(1))


def test_one_bit_mask(tmp_path):
    Image.fromarray(_square(255), "L").convert("1").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png"), _square(1))


def test_digest_is_of_pixels_not_file(tmp_path):
    gray = _gray(20, 30)
    Image.fromarray(gray, "L").save(tmp_path / "a.png")
    Image.fromarray(gray, "L").save(tmp_path / "copy.bmp")
    Image.fromarray(np.dstack([gray] * 3), "RGB").save(tmp_path / "rgb.png")
    other = gray.copy()
    other[0, 0] ^= 1
    Image.fromarray(other, "L").save(tmp_path / "other.png")
    d = file_digest(tmp_path / "a.png")
    assert d == file_digest(tmp_path / "copy.bmp") == file_digest(tmp_path / "rgb.png")
    assert d != file_digest(tmp_path / "other.png")
    Image.fromarray(other, "L").save(tmp_path / "a.png")  # rewritten: the cache must not answer
    os.utime(tmp_path / "a.png", ns=(1, 1))
    assert file_digest(tmp_path / "a.png") == file_digest(tmp_path / "other.png")


def test_image_info_and_list_images(tmp_path):
    Image.fromarray(_gray(13, 7), "L").save(tmp_path / "b.PNG")
    Image.fromarray(_gray(), "L").save(tmp_path / "a.jpg")
    Image.fromarray(_gray(), "L").save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    Image.fromarray(_gray(), "L").save(tmp_path / "sub" / "c.tif")
    assert image_info(tmp_path / "b.PNG") == (7, 13, "L")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["a.jpg", "b.PNG", "c.tif"]
    assert list_images(tmp_path / "missing") == []


def test_animated_gif_is_listed_and_read_from_its_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((5, 6), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    assert image_header(tmp_path / "a.gif") == (6, 5, "P", 2)
    assert list_images(tmp_path) == [tmp_path / "a.gif"]
    assert read_image(tmp_path / "a.gif").max() < 50


@pytest.mark.parametrize("content", [b"", b"junk", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_undecodable_file_is_named_once(tmp_path, content):
    path = tmp_path / "x.png"
    path.write_bytes(content)
    for read in (read_image, image_header):
        with pytest.raises(DataError) as err:
            read(path)
        assert str(err.value).count("x.png") == 1, str(err.value)


def test_decoding_threads_outlive_their_work_and_a_forked_child_gets_its_own(tmp_path):
    """Decoding threads never end while the process runs, so none is ending (under OpenCV's lock) when a loader
    worker is forked; a forked child decodes on threads of its own."""
    import multiprocessing
    import threading

    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.full((8, 8), 40 * i, np.uint8))
    file_digests(paths[:3])
    first = {t.ident for t in threading.enumerate() if t.name.startswith("decode")}
    file_digests(paths[3:])
    assert first and first <= {t.ident for t in threading.enumerate() if t.name.startswith("decode") and t.is_alive()}
    child = multiprocessing.get_context("fork").Process(target=file_digests, args=(paths,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and child.exitcode == 0, "a forked child's decoding hung or failed"
