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


# ---------------------------------------------------------------- hostile and broken files, limits, memory-lean decoding
import json  # noqa: E402
import os  # noqa: E402
import struct  # noqa: E402
import zlib  # noqa: E402

from gatta_viz.data import preprocess as pp  # noqa: E402


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(w: int, h: int, depth: int = 8, ctype: int = 0) -> bytes:
    """A PNG declaring w x h pixels with almost no pixel data: what a decompression bomb looks like before decoding."""
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
            + png_chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + png_chunk(b"IEND", b""))


def as_nobody(fn):
    """Run ``fn()`` in a forked child without root's right to read anything; returns (ok, value or message)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        try:
            os.setgid(65534)
            os.setuid(65534)
            out = {"ok": True, "value": repr(fn())}
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = {"ok": False, "type": type(e).__name__, "value": str(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def open_dir():
    """A folder everyone may enter (pytest's own tmp folder is root-only)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="gv-unreadable-")
    os.chmod(d, 0o755)
    yield __import__("pathlib").Path(d)
    shutil.rmtree(d, ignore_errors=True)


def test_unreadable_file_becomes_image_error_with_the_reason(open_dir):
    """Issue: open() was outside the per-file error handling, so one unreadable file lost the whole CLI batch."""
    tmp_path = open_dir
    path = tmp_path / "secret.png"
    path.write_bytes(encode(Image.new("L", (8, 8), 9), "PNG"))
    path.chmod(0)
    if os.geteuid() == 0:  # root reads anything: drop to 'nobody' in a child, where the permission check is real
        out = as_nobody(lambda: pp.load_image(str(path)))
    else:
        try:
            pp.load_image(str(path))
            out = {"ok": True}
        except Exception as e:  # noqa: BLE001
            out = {"ok": False, "type": type(e).__name__, "value": str(e)}
    assert out == {"ok": False, "type": "ImageError", "value": "secret.png: cannot read the file: permission denied"}
    if os.geteuid() == 0:  # and a batch goes on past it
        good = tmp_path / "good.png"
        good.write_bytes(encode(Image.new("L", (8, 8), 9), "PNG"))
        good.chmod(0o644)
        def batch():  # every file tried, each failure named
            ok, errors = [], []
            for p in (str(path), str(good)):
                try:
                    ok.append(pp.prepare_image(pp.load_image(p), PRE))
                except pp.ImageError as e:
                    errors.append(str(e))
            return [len(ok), errors]

        res = as_nobody(batch)
        assert res["ok"] and res["value"] == str([1, ["secret.png: cannot read the file: permission denied"]])


def test_directory_fifo_and_missing_paths_are_named(tmp_path):
    (tmp_path / "photos.png").mkdir()
    with pytest.raises(gv.ImageError, match=r"^photos.png: is a directory, not an image file$"):
        gv.load_image(str(tmp_path / "photos.png"))
    with pytest.raises(gv.ImageError, match=r"^gone.png: file not found$"):
        gv.load_image(str(tmp_path / "gone.png"))
    os.mkfifo(tmp_path / "pipe.png")  # would block a plain open() forever
    with pytest.raises(gv.ImageError, match=r"^pipe.png: is not a regular file$"):
        gv.load_image(str(tmp_path / "pipe.png"))


def test_file_object_that_fails_to_read_becomes_image_error():
    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise OSError(5, "Input/output error")

    with pytest.raises(gv.ImageError, match=r"^upload.png: cannot read the file: input/output error$"):
        gv.load_image(Broken(), name="upload.png")


def test_broken_png_chunk_is_called_a_broken_png_not_an_unknown_format():
    """Issue: a PNG with a bad chunk checksum was reported as 'not a recognised image format'."""
    data = bytearray(encode(Image.new("L", (20, 10), 7), "PNG"))
    data[29] ^= 0xFF  # the IHDR chunk's CRC
    with pytest.raises(gv.ImageError) as e:
        gv.load_image(bytes(data), name="crc.png")
    assert e.value.problem == "broken PNG file: bad header checksum in b'IHDR'"
    with pytest.raises(gv.ImageError, match=r"^short.png: broken PNG file: the file ends inside its header$"):
        gv.load_image(b"\x89PNG\r\n\x1a\n", name="short.png")
    jpeg = encode(Image.new("RGB", (20, 10)), "JPEG")
    with pytest.raises(gv.ImageError, match=r"^j.jpg: broken JPEG file: its header is not valid$"):
        gv.load_image(jpeg[:4] + b"\x00" * 30, name="j.jpg")


def test_decompression_bomb_message_quotes_our_limit_not_pillows():
    """Issue: a 400 Mpx header was refused with Pillow's own limit (178,956,970 pixels) in the message."""
    with pytest.raises(gv.ImageError) as e:
        gv.load_image(png_header_only(20000, 20000), name="bomb.png")
    assert e.value.problem == "image is over the 40,000,000-pixel limit (400,000,000 pixels)"
    with pytest.raises(gv.ImageError) as e:  # under Pillow's limits: our own check, with the size
        gv.load_image(png_header_only(7000, 7000), name="big.png")
    assert e.value.problem == "image is 7000x7000 = 49,000,000 pixels, over the 40,000,000-pixel limit"


def test_one_set_of_limits_from_the_environment(monkeypatch):
    """Issue: the app allowed 10 MB and the CLI 25 MB; now one limit, configurable, used by load_image by default."""
    monkeypatch.delenv(pp.ENV_MAX_UPLOAD_MB, raising=False)
    monkeypatch.delenv(pp.ENV_MAX_PIXELS, raising=False)
    assert pp.image_limits() == pp.ImageLimits(25 * 2**20, 40_000_000, 120 * 2**20)
    monkeypatch.setenv(pp.ENV_MAX_UPLOAD_MB, "1")
    monkeypatch.setenv(pp.ENV_MAX_PIXELS, "1000")
    assert pp.image_limits().max_bytes == 2**20 and pp.image_limits().max_pixels == 1000
    with pytest.raises(gv.ImageError, match=r"^big.bmp: file is over the 1 MB limit$"):
        gv.load_image(b"BM" + b"\x00" * 2**20, name="big.bmp")
    with pytest.raises(gv.ImageError, match="over the 1,000-pixel limit"):
        gv.load_image(encode(Image.new("L", (40, 40)), "PNG"), name="p.png")
    assert gv.load_image(encode(Image.new("L", (40, 40)), "PNG"), max_pixels=2000).size == (40, 40)  # argument wins
    monkeypatch.setenv(pp.ENV_MAX_UPLOAD_MB, "lots")
    with pytest.raises(ValueError, match="GATTA_VIZ_MAX_UPLOAD_MB must be a positive number, got 'lots'"):
        gv.load_image(b"x")


def test_decoding_memory_is_checked_from_the_header_before_decoding():
    """A 6320x6320 RGBA PNG is under the pixel limit but would take 152 MB decoded: refused, naming the limit."""
    with pytest.raises(gv.ImageError) as e:
        gv.load_image(png_header_only(6320, 6320, 8, 6), name="rgba.png")
    assert e.value.problem == ("image is 6320x6320 PNG in mode RGBA: decoding it takes about 152 MB, over the 120 MB "
                               "decoding limit; save it smaller")
    # the same size in 16-bit greyscale (2 bytes per pixel) passes the check and fails only on its missing data
    with pytest.raises(gv.ImageError, match="truncated or corrupt"):
        gv.load_image(png_header_only(6320, 6320, 16, 0), name="grey16.png")
    head = Image.open(io.BytesIO(png_header_only(100, 50, 16, 0)))
    assert pp.decoding_cost(head) == 100 * 50 * 2


def test_16bit_conversion_by_bands_matches_the_float64_formula():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 65536, size=(700, 900), dtype=np.uint16)  # several 1 MB bands
    out = np.asarray(gv.load_image(encode(Image.fromarray(a), "PNG")))
    want = np.clip(a.astype(np.float64) / 65535.0 * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(out, want)
    f = (rng.random((300, 500)) * 4.0).astype(np.float32)  # float image: scaled by its maximum
    out = np.asarray(gv.load_image(encode(Image.fromarray(f, "F"), "TIFF")))
    want = np.clip(f.astype(np.float64) / f.max() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - want).max() <= 1


def test_rgba_composited_on_black_by_bands_matches_pillow():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(600, 700, 4), dtype=np.uint8)
    out = np.asarray(gv.load_image(encode(Image.fromarray(a, "RGBA"), "PNG")), dtype=int)
    ref = Image.alpha_composite(Image.new("RGBA", (700, 600), (0, 0, 0, 255)), Image.fromarray(a, "RGBA")).convert("RGB")
    assert out.shape == (600, 700, 3) and np.abs(out - np.asarray(ref, dtype=int)).max() <= 1


def test_large_images_shrink_by_an_integer_box_filter_while_decoding():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, size=(900, 3000), dtype=np.uint8)
    img = Image.fromarray(a, "L")
    out = gv.load_image(encode(img, "PNG"), max_side=1024)
    assert out.size == (1000, 300)  # factor ceil(3000 / 1024) = 3
    assert np.array_equal(np.asarray(out), np.asarray(img.reduce(3)))  # bands give exactly the whole-image box filter
    assert gv.load_image(encode(img, "PNG"), max_side=None).size == (3000, 900)
    rgb = Image.fromarray(rng.integers(0, 256, size=(900, 3000, 3), dtype=np.uint8), "RGB")
    jpg = gv.load_image(encode(rgb, "JPEG", quality=90), max_side=1024)  # decoded at 1/2 scale, then shrunk
    assert max(jpg.size) <= 1024 and jpg.mode == "RGB"


def test_only_the_listed_decoders_run():
    data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"  # EPS would call Ghostscript
    with pytest.raises(gv.ImageError, match="not a recognised image format"):
        gv.load_image(data, name="x.eps")


@pytest.mark.parametrize("size, side", [((1, 400), "0.07"), ((400, 1), "0.07"), ((2, 3000), "0.019")])
def test_an_image_too_thin_for_the_model_is_refused_by_name(size, side):
    """Padded to the model's square input, a 1x400 image would shrink to 0 pixels: the model would see only the
    fill. It is refused with the reason; an image whose short side keeps at least one pixel goes in."""
    with pytest.raises(gv.ImageError, match=rf"^thin.png: image is {size[0]}x{size[1]}: too thin for the model's 28x28 "
                                            rf"input \(its short side would shrink to {side} pixels\)"):
        pp.prepare_image(Image.new("L", size, 200), PRE, name="thin.png")
    gradient = Image.fromarray(np.repeat(np.linspace(0, 255, 100).astype(np.uint8)[:, None], 3, axis=1), "L")
    x = pp.prepare_image(gradient, PRE, invert=False)  # 3x100: 0.84 px, rounds to one column that holds the image
    assert (x.shown[..., 0].std(axis=0) > 0.1).sum() == 1
