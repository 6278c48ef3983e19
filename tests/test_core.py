"""Image input/output against real files written here: every format and mode a user may have, and malformed ones."""
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from ldrps_nb.core import ImageError, LdrpsError, read_image, save_image, to_working, from_working


def _png_with_size(path, w, h):
    "A syntactically valid PNG header claiming w×h pixels, with almost no data (a decompression-bomb shape)."
    def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))


@pytest.fixture
def rng(): return np.random.default_rng(0)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "tiff", "webp", "bmp"])
def test_formats(tmp_path, rng, fmt):
    a = (rng.random((12, 20, 3)) * 255).astype(np.uint8)
    p = tmp_path / f"img.{fmt}"
    Image.fromarray(a).save(p, quality=95) if fmt in ("jpeg", "webp") else Image.fromarray(a).save(p)
    x = read_image(p)
    assert x.shape == (1, 3, 12, 20) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1
    tol = 0.2 if fmt in ("jpeg", "webp") else 1e-6
    assert (x[0].permute(1, 2, 0).numpy() - a / 255).__abs__().mean() < tol


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "1", "I;16", "RGB16"])
def test_modes(tmp_path, rng, mode):
    p = tmp_path / "m.png"
    if mode == "RGB16":
        p = tmp_path / "m.tiff"
        Image.fromarray((rng.random((6, 5)) * 65535).astype(np.uint16)).save(p)
    elif mode == "I;16":
        Image.fromarray((rng.random((6, 5)) * 65535).astype(np.uint16)).save(p)
    else:
        Image.fromarray((rng.random((6, 5, 3)) * 255).astype(np.uint8)).convert(mode).save(p)
    x = read_image(p)
    assert x.shape == (1, 3, 6, 5)
    assert float(x.min()) >= 0 and float(x.max()) <= 1


def test_palette_transparency_is_white(tmp_path):
    im = Image.new("P", (3, 3), 0); im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png", transparency=0)
    assert torch.equal(read_image(tmp_path / "p.png"), torch.ones(1, 3, 3, 3))


def test_one_pixel(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 0)).save(tmp_path / "one.png")
    assert read_image(tmp_path / "one.png").flatten().tolist() == [1.0, 0.0, 0.0]


@pytest.mark.parametrize("case,reason", [
    ("zero", "empty"), ("text", "not an image"), ("truncated_png", "truncated"), ("truncated_jpeg", "truncated"),
    ("corrupt", "not an image"), ("huge", "too large"), ("missing", "no such file"), ("folder", "folder"),
])
def test_malformed(tmp_path, rng, case, reason):
    a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    p = tmp_path / f"{case}.png"
    if case == "zero": p.write_bytes(b"")
    elif case == "text": p.write_text("hello, I am a text file")
    elif case == "truncated_png":
        Image.fromarray(a).save(tmp_path / "ok.png"); p.write_bytes((tmp_path / "ok.png").read_bytes()[:2000])
    elif case == "truncated_jpeg":
        p = tmp_path / "t.jpg"; Image.fromarray(a).save(tmp_path / "ok.jpg")
        p.write_bytes((tmp_path / "ok.jpg").read_bytes()[:600])
    elif case == "corrupt": p.write_bytes(bytes(rng.integers(0, 256, 4096, dtype=np.uint8)))
    elif case == "huge": _png_with_size(p, 100_000, 100_000)
    elif case == "folder": p.mkdir()
    with pytest.raises(ImageError, match=reason) as e:
        read_image(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg
    assert isinstance(e.value, LdrpsError)


def test_unicode_path(tmp_path):
    d = tmp_path / "фото 写真"
    d.mkdir()
    save_image(torch.rand(1, 3, 4, 4), d / "ça.png")
    assert read_image(d / "ça.png").shape == (1, 3, 4, 4)


def test_save_never_overwrites_input_and_is_atomic(tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (4, 4), (1, 2, 3)).save(src)
    before = src.read_bytes()
    with pytest.raises(ImageError, match="refusing"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "." / "in.png", protect=[src])
    assert src.read_bytes() == before
    with pytest.raises(ImageError, match="PNG"):
        save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.jpg")
    save_image(torch.rand(1, 3, 4, 4), tmp_path / "out.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]


@pytest.mark.parametrize("size", [(321, 481), (396, 600), (7, 3)])
@pytest.mark.parametrize("mode", ["stretch", "fit"])
def test_working_round_trip_size(size, mode):
    x = torch.rand(1, 3, *size)
    xw, frame = to_working(x, 64, mode=mode)
    assert xw.shape[-1] % 8 == 0 and xw.shape[-2] % 8 == 0
    assert from_working(xw, frame).shape == x.shape
