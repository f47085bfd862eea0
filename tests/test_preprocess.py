"""Decoding images safely and preparing them exactly as the model expects."""
import io

import numpy as np
import pytest
from PIL import Image

import gatta_viz as gv

PRE = {"size": [28, 28], "channels": 1, "mean": [0.286], "std": [0.353], "background": "dark"}


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode, fmt", [("RGB", "PNG"), ("RGB", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF"),
                                       ("RGBA", "PNG"), ("L", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("LA", "PNG")])
def test_formats_and_modes_decode_to_rgb_or_l(mode, fmt):
    base = Image.new("RGB", (10, 6), (200, 100, 50))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray(np.full((6, 10), 40000, dtype=np.uint16))
    out = gv.load_image(encode(img, fmt), name=f"x.{fmt.lower()}")
    assert out.mode in ("RGB", "L") and out.size == (10, 6)
    if mode == "I;16":
        assert np.asarray(out)[0, 0] == round(40000 / 65535 * 255)


def test_exif_orientation_is_respected():
    img = Image.new("L", (20, 10), 0)
    img.paste(255, (0, 0, 5, 5))  # white square top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    out = gv.load_image(encode(img, "JPEG", exif=exif, quality=95), name="r.jpg")
    assert out.size == (10, 20)
    arr = np.asarray(out)
    assert arr[:5, -5:].mean() > 200  # top-left moved to top-right


def test_rgba_transparent_composited_on_black():
    img = Image.new("RGBA", (4, 4), (255, 255, 255, 0))
    assert np.asarray(gv.load_image(encode(img, "PNG"))).max() == 0


@pytest.mark.parametrize("data, problem", [
    (b"", r"empty \(0 bytes\)"),
    (b"hello, not an image at all", "not a recognised image format"),
])
def test_bad_bytes_named_errors(data, problem):
    with pytest.raises(gv.ImageError, match=problem) as e:
        gv.load_image(data, name="bad.png")
    assert str(e.value).startswith("bad.png:")


def test_truncated_file_is_reported():
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(gv.ImageError, match="truncated or corrupt"):
        gv.load_image(data[: len(data) // 2], name="half.png")


def test_pixel_limit_and_size_limit():
    big = encode(Image.new("L", (3000, 3000)), "PNG")  # small file, 9 Mpx
    with pytest.raises(gv.ImageError, match="over the 1,000,000-pixel limit"):
        gv.load_image(big, name="bomb.png", max_pixels=1_000_000)
    with pytest.raises(gv.ImageError, match="over the"):
        gv.load_image(b"x" * 2000, name="huge.png", max_bytes=1000)


def test_prepare_image_matches_training_normalisation():
    d = gv.load_fashion_mnist("test").subset(3)
    img = Image.fromarray(d.images[2, 0].numpy(), "L")
    prep = gv.prepare_image(img, PRE)
    x, _ = d.tensors()
    assert not prep.inverted
    assert prep.tensor.shape == (1, 1, 28, 28)
    assert np.allclose(prep.tensor.numpy(), x[2:3].numpy(), atol=1e-6)  # 28x28 in -> identical to the data loader


def test_photo_on_white_is_inverted_padded_and_resized():
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((0, 0, 0), (80, 30, 120, 70))  # dark object on white
    prep = gv.prepare_image(img, PRE)
    assert prep.inverted and prep.shown.shape == (28, 28, 1)
    assert prep.shown[0, 0, 0] == pytest.approx(0.0, abs=0.02)  # background now dark
    assert prep.shown[14, 14, 0] > 0.9  # object now light
    assert not gv.prepare_image(img, PRE, invert=False).inverted
