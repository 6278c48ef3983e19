"""Captioners through the real from_pretrained path (a tiny random SmolVLM-architecture model), cleaning and the cache."""
import os

import pytest
import torch

import ldrps_nb.captioning as captioning
from ldrps_nb.backbone import tiny_clip_tokenizer
from ldrps_nb.captioning import (CAPTION_INSTRUCTION, DEFAULT_VLM, CaptionCache, Captioner, StaticCaptioner,
                                 VLMCaptioner, captioner_identity, clean_caption, image_key, tiny_vlm)
from ldrps_nb.core import ImageError, ModelLoadError


def _image(seed, h=40, w=56):
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="module")
def vlm(vlm_dir):
    return VLMCaptioner(model_id=str(vlm_dir), max_new_tokens=16, device="cpu")


class Counting:
    "Counts calls; passes the wrapped captioner's identity through."
    def __init__(self, inner):
        self.inner, self.calls, self.identity = inner, 0, captioner_identity(inner)

    def __call__(self, image):
        self.calls += 1
        return self.inner(image)


def test_default_model_and_instruction():
    assert DEFAULT_VLM == "HuggingFaceTB/SmolVLM-256M-Instruct"
    for word in ("20 words", "colours", "subject", "high quality"):
        assert word in CAPTION_INSTRUCTION


def test_vlm_is_deterministic_across_loads(vlm, vlm_dir):
    img = _image(0)
    cap = vlm(img)
    assert isinstance(cap, str) and cap == vlm(img)
    again = VLMCaptioner(model_id=vlm_dir, max_new_tokens=16, device="cpu")  # a Path works too
    assert again(img) == cap and again.identity == vlm.identity
    assert isinstance(vlm, Captioner)


def test_vlm_output_is_clean_and_fits(vlm_dir):
    tok = tiny_clip_tokenizer()
    cap = VLMCaptioner(model_id=vlm_dir, max_new_tokens=64, max_tokens=12, clip_tokenizer=tok, device="cpu")
    text = cap(_image(1))
    assert text == text.strip() and "\n" not in text and "  " not in text and "\ufffd" not in text
    assert len(tok(text).input_ids) <= 12


def test_identity_tracks_settings(vlm_dir, vlm):
    other = VLMCaptioner(model_id=vlm_dir, instruction="Describe the image.", max_new_tokens=16, device="cpu")
    assert other.identity != vlm.identity and str(vlm_dir) in vlm.identity


def test_vlm_bad_input(vlm):
    with pytest.raises(ImageError):
        vlm(torch.rand(3, 8, 8))
    with pytest.raises(ImageError):
        vlm(torch.rand(2, 3, 8, 8))


def test_load_failures(tmp_path, vlm_dir):
    with pytest.raises(ModelLoadError) as err:
        VLMCaptioner(model_id="no-such-org/no-such-vlm", device="cpu")
    assert "\n" not in str(err.value) and "StaticCaptioner" in str(err.value)
    with pytest.raises(ModelLoadError):
        VLMCaptioner(model_id=tmp_path / "absent", device="cpu")
    no_template = tmp_path / "no-template"
    tiny_vlm(no_template)
    (no_template / "chat_template.jinja").unlink()
    with pytest.raises(ModelLoadError, match="chat template"):
        VLMCaptioner(model_id=no_template, device="cpu")


def test_cache_reuses_and_separates(tmp_path, vlm):
    counting = Counting(vlm)
    cache = CaptionCache(tmp_path / "captions", counting)
    a, b = _image(2), _image(3)
    first = cache(a)
    assert cache(a) == first and counting.calls == 1
    assert cache.path(a).read_text(encoding="utf-8") == first
    assert cache.path(b) != cache.path(a)
    cache(b)
    assert counting.calls == 2
    files = sorted(p.name for p in (tmp_path / "captions").iterdir())
    assert len(files) == 2 and all(f.endswith(".txt") and len(f) == 64 + 4 for f in files)  # no temp files left


def test_cache_second_run_does_not_call_model(tmp_path, vlm_dir, monkeypatch):
    img = _image(4)
    first = CaptionCache(tmp_path, VLMCaptioner(model_id=vlm_dir, max_new_tokens=8, device="cpu"))(img)
    second_vlm = VLMCaptioner(model_id=vlm_dir, max_new_tokens=8, device="cpu")
    monkeypatch.setattr(second_vlm.model, "generate", lambda *a, **k: pytest.fail("the model was called"))
    assert CaptionCache(tmp_path, second_vlm)(img) == first


def test_cache_key_parts(tmp_path):
    img = _image(5)
    ident = "static:x"
    assert image_key(img, ident) == image_key(img.clone(), ident)
    assert image_key(img, ident) != image_key(img, "static:y")
    assert image_key(img, ident) != image_key(img.transpose(-1, -2).contiguous(), ident)  # same bytes count, new shape
    c1 = CaptionCache(tmp_path, StaticCaptioner("one"))
    c2 = CaptionCache(tmp_path, StaticCaptioner("two"))
    assert c1(img) == "one" and c2(img) == "two"  # same image, different captioners: different files


def test_cache_unicode_and_user_edits(tmp_path):
    img = _image(6)
    cache = CaptionCache(tmp_path / "c", StaticCaptioner("café au lait, ☕ on a table"))
    assert cache(img) == "café au lait, ☕ on a table"
    assert cache.path(img).read_bytes() == "café au lait, ☕ on a table".encode("utf-8")
    cache.path(img).write_text("edited by hand", encoding="utf-8")
    assert cache(img) == "edited by hand"


def test_cache_atomic_write(tmp_path, monkeypatch):
    img = _image(7)
    cache = CaptionCache(tmp_path, StaticCaptioner("text"))

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(captioning.os, "replace", broken_replace)
    with pytest.raises(OSError):
        cache(img)
    assert list(tmp_path.iterdir()) == []  # neither a partial caption nor a temporary file


def test_static_captioner():
    cap = StaticCaptioner()
    assert cap(_image(8)) == "" and isinstance(cap, Captioner)
    with pytest.raises(TypeError):
        StaticCaptioner(3)


@pytest.mark.parametrize("raw, clean", [
    ("Assistant: A boat.", "A boat."),
    ("assistant:\n\n'A boat on a lake'", "A boat on a lake"),
    ("Answer: Caption: «a boat»", "a boat"),
    ("a\tboat\r\n on\u200b a lake ", "a boat on a lake"),
    ("   ", ""),
])
def test_clean_caption_cases(raw, clean):
    assert clean_caption(raw) == clean


def test_clean_caption_budget():
    tok = tiny_clip_tokenizer()
    text = "a " * 60 + "end"
    for n in (5, 20, 77):
        out = clean_caption(text, tok, max_tokens=n)
        assert len(tok(out).input_ids) <= n and text.startswith(out)
    pieces = captioning._CLIP_PIECES.findall(clean_caption("one, two; three " * 40, max_tokens=10))
    assert len(pieces) <= 8
    assert clean_caption("short caption", tok) == "short caption"
