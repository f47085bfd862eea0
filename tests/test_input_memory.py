"""Small files, bounded memory: the largest file of each kind that load_image accepts costs at most about 150 MB
extra (peak RSS) to decode and prepare.

The files are generated in tmp at test time: PNGs are written row by row (every row the same, so a
40-megapixel 16-bit PNG is about 100 KB); the others through Pillow. Each is measured in a forked child of
one fresh interpreter: the child resets its peak-RSS counter (/proc/self/clear_refs), reads its current
RSS, decodes and prepares the file, and reports VmHWM - VmRSS. Measured that way, the code before this
test existed took 1.1-1.5 GB for the same files.
"""
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

BUDGET_MB = 150
pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc/self/clear_refs")


def streamed_png(path, w: int, h: int, depth: int = 8, ctype: int = 0) -> str:
    """A w x h PNG written row by row without ever holding the image: a gradient first row, then 'Up' rows of zeros."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[ctype]
    row_bytes = w * channels * depth // 8

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    parts = [z.compress(b"\x00" + (np.arange(row_bytes) % 251).astype(np.uint8).tobytes())]
    up = b"\x02" + bytes(row_bytes)
    parts += [z.compress(up) for _ in range(h - 1)]
    parts.append(z.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 0))
                + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return str(path)


def pillow_file(path, mode: str, w: int, h: int, fmt: str, **kw) -> str:
    if mode == "F":
        img = Image.new("F", (w, h), 0.5)
    else:
        img = Image.linear_gradient("L").resize((w, h)).convert(mode)
    img.save(path, fmt, **kw)
    return str(path)


MEASURE = r'''
import io, json, os, sys
import torch
torch.set_num_threads(1)
from PIL import Image
from gatta_viz.data import preprocess as pp

PRE = {"size": [224, 224], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3}


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


for fmt in ("PNG", "JPEG", "WEBP", "TIFF"):  # load each decoder's library before measuring
    b = io.BytesIO()
    Image.new("RGB", (64, 48), (9, 99, 200)).save(b, fmt)
    pp.prepare_image(pp.load_image(b.getvalue()), PRE)
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # peak RSS := current RSS
        base = status("VmRSS:")
        try:
            img = pp.load_image(data, name=os.path.basename(path))
            pp.prepare_image(img, PRE)
            result = "ok"
        except pp.ImageError as e:
            result = str(e)
        os.write(w, json.dumps([os.path.basename(path), (status("VmHWM:") - base) / 2**20, result]).encode())
        os._exit(0)
    os.close(w)
    out = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    print(out.decode(), flush=True)
'''


def measure(paths):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in ("GATTA_VIZ_MAX_UPLOAD_MB", "GATTA_VIZ_MAX_PIXELS", "GATTA_VIZ_MAX_DECODED_MB"):
        env.pop(var, None)
    r = subprocess.run([sys.executable, "-c", MEASURE, *paths], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return {name: (mb, result) for name, mb, result in (json.loads(line) for line in r.stdout.splitlines())}


def test_largest_accepted_file_of_each_kind_costs_at_most_150_mb(tmp_path):
    files = [
        streamed_png(tmp_path / "grey16_6320.png", 6320, 6320, 16, 0),  # the file: 40 Mpx, ~100 KB
        streamed_png(tmp_path / "rgba_5600.png", 5600, 5600, 8, 6),  # 4 bytes per pixel: the largest accepted
        streamed_png(tmp_path / "rgb_5600.png", 5600, 5600, 8, 2),
        pillow_file(tmp_path / "float_5600.tiff", "F", 5600, 5600, "TIFF", compression="tiff_deflate"),
        pillow_file(tmp_path / "rgb_6320.jpg", "RGB", 6320, 6320, "JPEG", quality=90),  # at the pixel limit
        pillow_file(tmp_path / "progressive_5400.jpg", "RGB", 5400, 5400, "JPEG", quality=90, progressive=True),
        pillow_file(tmp_path / "rgb_2800.webp", "RGB", 2800, 2800, "WEBP", quality=80),
        streamed_png(tmp_path / "rgba_6320.png", 6320, 6320, 8, 6),  # refused from its header
    ]
    assert all(os.path.getsize(f) < 2_000_000 for f in files)  # small files...
    got = measure(files)
    report = "\n".join(f"{n}: {mb:.0f} MB, {res}" for n, (mb, res) in got.items())
    for name, (mb, result) in got.items():
        assert mb <= BUDGET_MB, report  # ...bounded memory
        if name != "rgba_6320.png":
            assert result == "ok", report
    assert "over the 120 MB decoding limit" in got["rgba_6320.png"][1], report
    assert got["rgba_6320.png"][0] < 5, report  # refused before a pixel is decoded
