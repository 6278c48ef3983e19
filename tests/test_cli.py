"""The `ldrps` command line: malformed inputs, nothing lost or half-written, determinism, resuming, exit codes,
interrupts, sharding over processes, and the caption / eval / info / demo commands (tiny models, 32x32 images)."""
import hashlib
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import ldrps_nb.cli as cli
from ldrps_nb.cli import TINY_LABEL, main, shard

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--backbone", "tiny", "--set", "resolution=32"]  # the random tiny model at a 32-pixel working side
FAST = [*MODEL, "--steps", "2", "--recurrences", "0", "--no-progress"]


def _rgb(seed: int, size=(32, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png(path: Path, side: int = 100_000) -> None:
    "A valid PNG header claiming side x side pixels (with a token IDAT): decompression-bomb bait."
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + _png_chunk(b"IEND", b""))


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int]], list[str]]:
    "A folder of good images (name -> size) in awkward formats and bad files; returns (folder, good, bad names)."
    d = tmp_path / "in put"
    d.mkdir()
    good = {}
    def save(name, im, **kw):
        im.save(d / name, **kw)
        good[name] = im.size
    save("rgba.png", Image.fromarray(np.dstack([_rgb(1), np.full((32, 32), 128, np.uint8)]), "RGBA"))
    save("sixteen.png", Image.fromarray((np.random.default_rng(2).integers(0, 65536, (32, 32))).astype(np.uint16)))
    save("grey.png", Image.fromarray(_rgb(3)[..., 0], "L"))
    save("palette.png", Image.fromarray(_rgb(4)).convert("P", palette=Image.Palette.ADAPTIVE))
    save("one.png", Image.fromarray(_rgb(5, (1, 1))))
    save("ñandú 画像.png", Image.fromarray(_rgb(6, (48, 32))))
    save("photo.jpg", Image.fromarray(_rgb(7)), quality=90)
    whole = (d / "rgba.png").read_bytes()
    (d / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    (d / "zero.png").write_bytes(b"")
    (d / "text.png").write_text("this is not an image\n")
    _huge_png(d / "huge.png")
    (d / "notes.txt").write_text("not an image either")  # not picked from the folder; named explicitly below
    bad = ["truncated.png", "corrupt.png", "zero.png", "text.png", "huge.png", "notes.txt"]
    return d, good, bad


def test_malformed_corpus_through_the_cli(corpus, tmp_path):
    folder, good, bad = corpus
    before = _digest(folder)
    out = tmp_path / "out"
    missing = tmp_path / "missing.png"
    cmd = [sys.executable, "-m", "ldrps_nb.cli", "restore", str(folder), str(folder / "notes.txt"), str(missing),
           "-o", str(out), "--preset", "lowlight", *FAST]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"}
    proc = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", env=env, timeout=600, cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text
    assert "Traceback" not in text, text
    for name in [*bad, missing.name]:  # exactly one clear error line per bad case (the summary is on stdout)
        lines = [ln for ln in proc.stderr.splitlines() if name in ln]
        assert len(lines) == 1 and lines[0].startswith("FAIL"), (name, proc.stderr)
    assert "too large" in next(ln for ln in proc.stderr.splitlines() if "huge.png" in ln)
    assert f"{len(good) + len(bad) + 1} input(s): {len(good)} restored, 0 skipped, {len(bad) + 1} failed" in proc.stdout
    assert _digest(folder) == before  # inputs byte-identical, nothing added beside them
    for name, size in good.items():
        stem = Path(name).stem
        assert Image.open(out / f"{stem}.png").size == size, name
        side = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        assert side["input"] == str(folder / name) and side["label"] == TINY_LABEL
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{Path(n).stem}{e}" for n in good for e in (".png", ".json"))


def test_auto_preset_on_a_1x1_image(tmp_path, capsys):
    src = tmp_path / "one.png"
    Image.fromarray(_rgb(8, (1, 1))).save(src)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--preset", "auto", *FAST]) == 0
    assert Image.open(tmp_path / "out" / "one.png").size == (1, 1)


def test_deterministic_resumable_and_overwrite(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(_rgb(11)).save(src)
    args = ["restore", str(src), *MODEL, "--steps", "2", "--recurrences", "1", "--seed", "3", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "o1")]) == 0
    assert main([*args, "-o", str(tmp_path / "o2")]) == 0
    first = (tmp_path / "o1" / "a.png").read_bytes()
    assert first == (tmp_path / "o2" / "a.png").read_bytes()  # bitwise, per seed, on the CPU
    side = json.loads((tmp_path / "o1" / "a.json").read_text())
    assert (side["seed"], side["settings"]["recurrences"], side["overrides"]["recurrences"]) == (3, 1, 1)
    assert (side["settings"]["output_pass"], side["returned_pass"], side["pass_shares"]) == ("last", 1, [0.0, 1.0])
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "o1")]) == 0
    assert "0 restored, 1 skipped" in capsys.readouterr().out
    (tmp_path / "o2" / "a.json").unlink()  # a PNG without its sidecar is redone
    assert main([*args, "-o", str(tmp_path / "o2")]) == 0
    assert "1 restored, 0 skipped" in capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "o1"), "--overwrite"]) == 0
    assert "1 restored" in capsys.readouterr().out
    assert (tmp_path / "o1" / "a.png").read_bytes() == first


def test_never_writes_over_an_input(tmp_path, capsys):
    src = tmp_path / "a.png"
    Image.fromarray(_rgb(12)).save(src)
    before = src.read_bytes()
    assert main(["restore", str(src), "-o", str(tmp_path), *FAST]) == 1
    err = capsys.readouterr().err
    assert "would overwrite an input" in err and "Traceback" not in err
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("where", ["sampling", "writing the sidecar"])
def test_keyboard_interrupt_exits_130_without_partial_files(tmp_path, capsys, monkeypatch, where):
    def interrupt(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(cli, "recurrent_sample" if where == "sampling" else "write_json", interrupt)
    src = tmp_path / "a.png"
    Image.fromarray(_rgb(13)).save(src)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), *FAST]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("argv", [[], ["restore"], ["restore", "a.png"], ["restore", "a.png", "-o", "o", "--steps", "x"],
                                  ["restore", "a.png", "-o", "o", "--set", "steps"], ["restore", "a.png", "-o", "o", "--preset", "sharpen"],
                                  ["eval", "d", "--method", "magic"], ["frobnicate"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "usage" in err and "Traceback" not in err


def test_help_and_version_exit_0(capsys):
    assert main(["--help"]) == 0
    assert main(["restore", "--help"]) == 0
    assert main(["--version"]) == 0
    assert "ldrps-nb" in capsys.readouterr().out


@pytest.mark.parametrize("extra, needle", [(["--backbone", "/no/such/backbone"], "does not exist"),
                                           (["--backbone", "tiny", "--set", "stepz=3"], "unknown preset field"),
                                           (["--backbone", "tiny", "--perceptual", "/no/such/vgg.pth"], "not found"),
                                           (["--backbone", "tiny", "--device", "foo"], "unknown device 'foo'"),
                                           (["--backbone", "tiny", "--set", "guidance_scale=abc"], "guidance_scale must be a number"),
                                           (["--backbone", "tiny", "--set", "fpam_weights=abc"], "fpam_weights must be a tuple of 3")])
def test_setup_errors_are_one_line_exit_1(tmp_path, capsys, extra, needle):
    src = tmp_path / "a.png"
    Image.fromarray(_rgb(14)).save(src)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ldrps: error:") and needle in err[0], err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_shard_simulated_ranks():
    items = [f"f{i}.png" for i in range(11)]
    for n in (1, 2, 3, 4, 16):
        parts = [shard(items, SimpleNamespace(num_processes=n, process_index=i)) for i in range(n)]
        assert sum(parts, []) == items  # every file once, in order: processes write disjoint outputs
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert shard(items, cli.process_state()) == items  # a plain process takes everything


def test_accelerate_launch_two_cpu_processes(tmp_path):
    "The real thing: accelerate's distributed launcher with two CPU processes (gloo); about 30 s on two busy cores."
    pytest.importorskip("accelerate")
    files = []
    for i in range(3):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(_rgb(20 + i)).save(files[-1])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ldrps_nb.cli", "restore", *map(str, files),
           "-o", str(out), *FAST]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "[1/2] 2 input(s): 2 restored" in proc.stdout and "[2/2] 1 input(s): 1 restored" in proc.stdout, proc.stdout
    assert sorted(p.name for p in out.glob("*.png")) == ["img0.png", "img1.png", "img2.png"]


def test_caption_command(tmp_path, capsys):
    from ldrps_nb.captioning import tiny_vlm
    vlm = tiny_vlm(tmp_path / "vlm")
    img, bad = tmp_path / "a.png", tmp_path / "bad.png"
    Image.fromarray(_rgb(30)).save(img)
    bad.write_bytes(b"nope")
    cache = tmp_path / "cache"
    assert main(["caption", str(img), str(bad), "--captioner", str(vlm), "--cache-dir", str(cache), "--device", "cpu"]) == 1
    out, err = capsys.readouterr()
    line = out.strip().splitlines()[-1]
    assert line.startswith(f"{img}\t"), out
    assert "FAIL" in err and "bad.png" in err and "Traceback" not in err
    assert len(list(cache.glob("*.txt"))) == 1
    assert main(["caption", str(img), "--captioner", str(vlm), "--cache-dir", str(cache), "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == line  # cached: the same caption


def _lol(tmp_path: Path) -> Path:
    root = tmp_path / "lol"
    for sub, seed in (("low", 40), ("high", 41)):
        (root / sub).mkdir(parents=True)
        Image.fromarray(_rgb(seed)).save(root / sub / "1.png")
    return root


def test_eval_command(tmp_path, capsys):
    root, csv = _lol(tmp_path), tmp_path / "t.csv"
    code = main(["eval", str(root), "--method", "input", "gamma", "ldrps", "--metrics", "psnr", "ssim", "--preset",
                 "lowlight", "--csv", str(csv), *FAST])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"| ldrps ({TINY_LABEL}) |" in out and "| gamma |" in out and "| input |" in out
    assert csv.read_text().splitlines()[0] == "method,n_images,n_scored,psnr,ssim,seconds_per_image,note"


def test_eval_never_writes_over_a_file(tmp_path, capsys):
    root = _lol(tmp_path)
    image = next((root / "low").iterdir())
    before = image.read_bytes()
    run = lambda *extra: main(["eval", str(root), "--method", "input", "--metrics", "psnr", "--no-progress", *extra])
    assert run("--csv", str(image), "--overwrite") == 1 and image.read_bytes() == before  # a .csv name only
    csv = tmp_path / "t.csv"
    csv.write_text("mine")
    assert run("--csv", str(csv)) == 1 and csv.read_text() == "mine"                      # not over a file unasked
    err = capsys.readouterr().err.strip().splitlines()
    assert [e.startswith("ldrps: error:") for e in err] == [True, True] and "exists" in err[1], err
    assert run("--csv", str(csv), "--overwrite") == 0 and csv.read_text().startswith("method,")


def test_eval_parameters_are_checked(tmp_path, capsys):
    root = _lol(tmp_path) / "high"
    run = lambda *extra: main(["eval", str(root), "--method", "input", "--metrics", "psnr", "--no-progress", *extra])
    assert run("--degradation", "gaussian_noise", "--param", "sigma=abc") == 1
    assert run("--max-side", "0") == 1 and run("--limit", "-1") == 1
    err = capsys.readouterr().err
    assert "sigma must be a number" in err and "max_side must be >= 1" in err and "must be >= 1, got -1" in err
    assert "Traceback" not in err
    assert run("--degradation", "grey", "--param", "standard=709") == 0  # a string setting that looks like a number


def test_eval_with_unavailable_backbone_still_reports_baselines(tmp_path, capsys):
    code = main(["eval", str(_lol(tmp_path)), "--method", "input", "gamma", "ldrps", "--metrics", "psnr",
                 "--backbone", "/no/such/backbone"])
    out = capsys.readouterr().out
    assert code == 1
    assert "| gamma |" in out and "unavailable: backbone folder /no/such/backbone does not exist" in out


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for key in ("ldrps-nb:", "torch:", "diffusers:", "transformers:", "device:", "dtype:", "HF cache:", "pocket weights:"):
        assert key in out


def test_demo_restores_with_the_pocket_models(tmp_path, capsys):
    "The demo runs on the shipped pocket models (no tiny fallback) and writes before/after, figure and metrics."
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--data", str(ROOT / "data" / "pocket"), "--limit", "1", "--steps", "4",
                 "--recurrences", "0", "--no-progress"]) == 0
    text = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert "cannot be loaded" not in text and TINY_LABEL not in text and "pocket backbone" in text
    assert names == ["demo_figure.png", "demo_metrics.md", "lowlight_2000000_after.png", "lowlight_2000000_before.png"]
    assert "| lowlight_2000000 | lowlight |" in text


def test_demo_falls_back_honestly(tmp_path, monkeypatch, capsys):
    "Without the pocket weights the demo says why, runs the tiny random backbone and labels every output."
    import ldrps_nb.pocket as pocket
    monkeypatch.setattr(pocket, "POCKET_DIR", tmp_path / "no-weights")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--data", str(ROOT / "data" / "pocket"), "--limit", "1", "--steps", "1",
                 "--recurrences", "0", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "pocket-world models cannot be loaded" in text and "chapter 09" in text and TINY_LABEL in text
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4 and all("tiny-random-NOT-restored" in n for n in names if "before" not in n), names


def test_demo_per_task(tmp_path, capsys):
    "One sample per task by default; --per-task 2 restores all eight, the two of a task in one call; bad counts are one line."
    out = tmp_path / "demo"
    quick = ["--data", str(ROOT / "data" / "pocket"), "--steps", "2", "--recurrences", "0", "--no-progress"]
    assert main(["demo", "-o", str(out / "one"), *quick]) == 0
    rows = [line.split(" | ")[0].strip("| ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "_20" in line]
    assert rows == ["lowlight_2000000", "haze_2000000", "noise_2000000", "grey_2000000"]
    assert main(["demo", "-o", str(out / "all"), "--per-task", "2", *quick]) == 0
    rows = [line.split(" | ")[0].strip("| ") for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "_20" in line]
    assert rows == [f"{task}_{seed}" for task in ("lowlight", "haze", "noise", "grey") for seed in (2000000, 2000001)]
    assert main(["demo", "-o", str(out / "bad"), "--per-task", "-1", *quick]) == 1
    assert "per_task must be >= 1" in capsys.readouterr().err
    assert main(["demo", "-o", str(out / "bad"), "--limit", "0", *quick]) == 1
    assert "limit must be >= 1" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("mine")
    assert main(["demo", "-o", str(tmp_path / "a_file"), *quick]) == 1   # an output folder that is a file
    err = capsys.readouterr().err.strip().splitlines()  # --no-progress: no model-loading bars either
    assert len(err) == 1 and "cannot create the output folder" in err[0] and (tmp_path / "a_file").read_text() == "mine"


def test_restore_in_batches(corpus, tmp_path, capsys):
    "--batch 4: good images of a preset share a call, bad ones fail alone, sidecars record the batch, resuming skips."
    folder, good, bad = corpus
    inputs = [str(folder / name) for name in (*good, "truncated.png")]
    assert main(["restore", *inputs, "-o", str(tmp_path / "b4"), "--batch", "4", "--preset", "auto", *FAST]) == 1
    text = capsys.readouterr()
    assert "truncated.png" in text.err and f"{len(good) + 1} input(s): {len(good)} restored, 0 skipped, 1 failed" in text.out
    sidecars = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "b4").glob("*.json")}
    assert len(sidecars) == len(good)
    assert all(s["auto"]["preset"] == s["preset"] for s in sidecars.values())   # auto still chose per image
    assert max(s["timings"]["batch"] for s in sidecars.values()) > 1
    for stem, size in ((Path(n).stem, s) for n, s in good.items()):
        assert Image.open(tmp_path / "b4" / f"{stem}.png").size == size
    assert main(["restore", *inputs, "-o", str(tmp_path / "b4"), "--batch", "4", "--preset", "auto", *FAST]) == 1
    assert f"{len(good)} skipped" in capsys.readouterr().out                  # resumable in batches too
    assert main(["restore", *inputs, "-o", str(tmp_path / "x"), "--batch", "0", *FAST]) == 1
    assert "--batch must be >= 1" in capsys.readouterr().err


def test_failed_batch_call_is_retried_per_image(corpus, tmp_path, monkeypatch, capsys):
    "If the sampler call of a batch fails, its images are restored one by one, so one bad image does not fail the rest."
    from ldrps_nb.core import NumericalError
    folder, good, _ = corpus
    real_sample = cli.Restorer._sample
    def flaky(self, ys, preset, progress):
        if isinstance(ys, list): raise NumericalError("a batch went wrong")
        if ys.shape[-1] == 1: raise NumericalError("this image is the bad one")
        return real_sample(self, ys, preset, progress)
    monkeypatch.setattr(cli.Restorer, "_sample", flaky)
    inputs = [str(folder / name) for name in ("rgba.png", "one.png", "photo.jpg")]
    assert main(["restore", *inputs, "-o", str(tmp_path / "out"), "--batch", "3", "--preset", "lowlight", *FAST]) == 1
    text = capsys.readouterr()
    assert "3 input(s): 2 restored, 0 skipped, 1 failed (one.png)" in text.out and "this image is the bad one" in text.err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["photo.png", "rgba.png"]


@pytest.mark.parametrize("flags", [[], ["--vae-checkpointing"], ["--text-encoder-offload"]])
def test_memory_options(flags):
    args = cli.build_parser().parse_args(["restore", "x.png", "-o", "out", "--backbone", "tiny", "--caption", "a",
                                          "--dtype", "bfloat16", *flags])
    backbone = cli.build_restorer(args).backbone
    assert backbone.vae.decoder.gradient_checkpointing == ("--vae-checkpointing" in flags)
    offloaded = "--text-encoder-offload" in flags   # kept in float32 on the CPU, whatever the weights' dtype
    assert backbone.text_encoder.dtype == (torch.float32 if offloaded else torch.bfloat16)
