"""`ldrps_nb.evaluation`: metrics against scikit-image, baselines on synthetic degradations, folder pairing, the harness."""
import csv
import math
from pathlib import Path

import pytest
import torch

from ldrps_nb.core import ConfigError, ImageError, LdrpsError, make_generator, save_image
from ldrps_nb.degradations import gaussian_noise, haze, synthetic_scene
from ldrps_nb.evaluation import (BASELINES, DATA_NOTE, INPUT_ROW, NIQE_NOTE, LPIPSMetric, SyntheticDataset, Unavailable,
                                 baseline_methods, bm3d_denoise, box_filter, clahe, default_metrics, dehaze_dcp,
                                 estimate_noise_sigma, evaluate, fit_max_side, gamma_correction, get_metrics,
                                 guided_filter, list_images, load_lpips, lol_dataset, lpips_metric, markdown_table,
                                 nlm_denoise, open_dataset, paired_folders, psnr, reside_dataset, reside_key, ssim,
                                 synthetic_dataset, unpaired_dataset, write_csv)


@pytest.fixture
def scene() -> torch.Tensor:
    return synthetic_scene(64, 96)


def _natural_pair(h: int = 45, w: int = 67, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    "A textured image and a noisy, shifted version of it (odd sizes on purpose)."
    x = synthetic_scene(h, w)
    y = gaussian_noise(x.roll(1, dims=-1) * 0.9 + 0.05, sigma=12, generator=make_generator(seed)).image
    return x, y


# ---------------------------------------------------------------- metrics
def test_psnr_identical_is_inf_and_constant_offset_is_known(scene):
    assert psnr(scene, scene).item() == math.inf
    a = scene * 0.5 + 0.25
    assert abs(psnr(a + 0.05, a).item() - 10 * math.log10(1 / 0.0025)) < 1e-4  # 26.0206 dB
    assert abs(psnr(a + 0.1, a, data_range=2.0).item() - 10 * math.log10(4 / 0.01)) < 1e-4


def test_psnr_matches_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x, y = _natural_pair()
    ref = skm.peak_signal_noise_ratio(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(), data_range=1)
    assert abs(psnr(y, x).item() - ref) < 1e-4


@pytest.mark.parametrize("h,w,seed", [(45, 67, 0), (16, 16, 1), (64, 33, 2)])
def test_ssim_matches_skimage(h, w, seed):
    skm = pytest.importorskip("skimage.metrics")
    x, y = _natural_pair(h, w, seed)
    ref = skm.structural_similarity(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                    channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert abs(ssim(y, x).item() - ref) < 1e-6


def test_ssim_on_a_kodak_crop_matches_skimage(shared_dir):
    skm = pytest.importorskip("skimage.metrics")
    from ldrps_nb.core import read_image
    x = read_image(shared_dir / "data" / "kodak24" / "kodim05.png")[..., :120, :160]
    y = gaussian_noise(x, sigma=30, generator=make_generator(0)).image
    ref = skm.structural_similarity(x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
                                    channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert abs(ssim(y, x).item() - ref) < 1e-6


def test_metric_inputs_are_checked(scene):
    for metric in (psnr, ssim):
        with pytest.raises(ImageError, match="differ in shape"):
            metric(scene, scene[..., :32])
        with pytest.raises(ImageError):
            metric(scene[0], scene[0])
    with pytest.raises(ImageError, match="at least 11x11"):
        ssim(scene[..., :10, :10], scene[..., :10, :10])


def test_batched_metrics_are_per_image(scene):
    a, b = torch.cat([scene, scene]), torch.cat([scene, scene.flip(-1)])
    assert psnr(a, b).shape == (2,) and ssim(a, b).shape == (2,)
    assert ssim(a, b)[0].item() == pytest.approx(1.0)


def test_lpips_unavailable_offline_is_a_clear_marker(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache: as offline as it gets
    m = lpips_metric()
    assert isinstance(m, Unavailable) and "alexnet" in m.reason and "offline" in m.reason
    with pytest.raises(LdrpsError, match="unavailable"):
        load_lpips()
    assert isinstance(default_metrics()["lpips"], Unavailable)
    with pytest.raises(ConfigError):
        load_lpips("resnet")


@pytest.mark.filterwarnings("ignore::UserWarning")  # torchvision's deprecation notes inside lpips
def test_lpips_with_an_injected_network(scene):
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    m = lpips_metric(net)
    assert isinstance(m, LPIPSMetric)
    assert m(scene, scene).abs().max() < 1e-6
    noisy = gaussian_noise(scene, sigma=30).image
    assert m(noisy, scene).item() > m(gaussian_noise(scene, sigma=5).image, scene).item() > 0


def test_get_metrics_by_name():
    assert list(get_metrics(["ssim", "psnr"])) == ["ssim", "psnr"]
    with pytest.raises(ConfigError, match="niqe"):
        get_metrics(["niqe"])


# ---------------------------------------------------------------- baselines
def test_dcp_improves_psnr_on_synthetic_haze(scene):
    hazy = haze(scene, beta=1.2, airlight=0.85).image
    out = dehaze_dcp(hazy)
    assert out.shape == hazy.shape and 0 <= out.min() and out.max() <= 1
    assert psnr(out, scene).item() > psnr(hazy, scene).item() + 3


def test_guided_filter_and_box_filter():
    x = torch.rand(1, 1, 20, 30, generator=make_generator(0))
    ref = torch.nn.functional.avg_pool2d(x, 5, stride=1)  # interior of the clipped box filter
    torch.testing.assert_close(box_filter(x, 2)[..., 2:-2, 2:-2], ref)
    flat = torch.full((1, 1, 20, 30), 0.3)
    torch.testing.assert_close(guided_filter(x, flat, radius=4), flat)  # a constant source stays constant
    torch.testing.assert_close(guided_filter(x, x, radius=4, eps=1e-9), x, atol=1e-3, rtol=0)  # edge-preserving: guide = source


def test_nlm_reduces_noise_at_sigma_30(scene):
    clean = 0.2 + 0.6 * scene
    noisy = gaussian_noise(clean, sigma=30, generator=make_generator(2)).image
    assert abs(estimate_noise_sigma(noisy).item() - 30) < 3
    for out in (nlm_denoise(noisy), nlm_denoise(noisy, 30)):
        assert out.shape == noisy.shape
        assert psnr(out, clean).item() > psnr(noisy, clean).item() + 4
    assert torch.equal(nlm_denoise(noisy, 0), noisy)
    with pytest.raises(ConfigError, match="patch"):
        nlm_denoise(noisy, patch=4)


def test_nlm_on_a_tiny_image_uses_replicate_padding():
    y = torch.rand(1, 3, 9, 12, generator=make_generator(0))
    assert nlm_denoise(y, 20).shape == y.shape


def test_gamma_and_clahe_brighten_a_dark_image(scene):
    dark = scene * 0.15
    for fn in (gamma_correction, clahe):
        out = fn(dark)
        assert out.shape == dark.shape and 0 <= out.min() and out.max() <= 1
        assert out.mean() > dark.mean()
    with pytest.raises(ConfigError):
        gamma_correction(dark, target=1.5)
    with pytest.raises(ConfigError):
        clahe(dark, clip_limit=0.5)
    with pytest.raises(ImageError):
        clahe(dark[0])


def test_clahe_keeps_grey_grey(scene):
    g = scene.mean(1, keepdim=True).expand(-1, 3, -1, -1) * 0.3
    out = clahe(g)
    assert (out[:, 0] - out[:, 1]).abs().max() < 1e-5 and (out[:, 1] - out[:, 2]).abs().max() < 1e-5


def test_baseline_registry():
    assert {b.task for b in BASELINES.values()} == {"lowlight", "dehaze", "denoise"}
    assert list(baseline_methods("lowlight")) == ["gamma", "clahe"]
    methods = baseline_methods("denoise")
    assert methods["nlm"] is nlm_denoise
    if not BASELINES["bm3d"].available:
        assert isinstance(methods["bm3d"], Unavailable) and "bm3d" in methods["bm3d"].reason
        with pytest.raises(ConfigError, match="bm3d"):
            bm3d_denoise(torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError):
        baseline_methods("inpaint")


# ---------------------------------------------------------------- datasets
def _write(path: Path, seed: int = 0, size: tuple[int, int] = (24, 32)) -> None:
    save_image(synthetic_scene(*size).roll(seed * 3, dims=-1), path)


def test_reside_pairing_by_name_rule(tmp_path):
    for i in (1, 2, 10):
        _write(tmp_path / "gt" / f"{i:04d}.png", i)
        _write(tmp_path / "hazy" / f"{i:04d}_0.8_0.2.png", i)
    ds = reside_dataset(tmp_path)
    assert ds.names == ["0001_0.8_0.2.png", "0002_0.8_0.2.png", "0010_0.8_0.2.png"]
    assert [e[2].name for e in ds.entries] == ["0001.png", "0002.png", "0010.png"]
    samples = list(ds)
    assert all(x is not None and x.shape == y.shape for _, y, x in samples)
    assert reside_key("1400_1") == "1400"


def test_reside_identical_names_and_uppercase_gt(tmp_path):
    for n in ("1400_1", "1401_2"):
        _write(tmp_path / "GT" / f"{n}.png"); _write(tmp_path / "hazy" / f"{n}.png")
    ds = open_dataset(tmp_path)
    assert [e[2].name for e in ds.entries] == ["1400_1.png", "1401_2.png"]


def test_lol_pairing_and_natural_order(tmp_path):
    for n in ("2", "10", "1"):
        _write(tmp_path / "low" / f"{n}.png"); _write(tmp_path / "high" / f"{n}.png")
    ds = lol_dataset(tmp_path)
    assert ds.names == ["1.png", "2.png", "10.png"] and ds.has_ground_truth
    assert open_dataset(tmp_path).names == ds.names


def test_clear_errors_for_bad_layouts(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        unpaired_dataset(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not found"):
        list_images(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not found"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match="no images"):
        unpaired_dataset(tmp_path / "empty")
    with pytest.raises(ConfigError, match="sub-folder"):
        lol_dataset(tmp_path)
    _write(tmp_path / "hazy" / "0001_0.8_0.2.png"); _write(tmp_path / "GT" / "0002.png")
    with pytest.raises(ConfigError, match="no ground truth"):
        reside_dataset(tmp_path)
    (tmp_path / "low").mkdir(); (tmp_path / "high").mkdir()
    _write(tmp_path / "low" / "1.png")
    with pytest.raises(ConfigError, match="no images"):
        lol_dataset(tmp_path)


def test_pair_size_mismatch_is_an_image_error(tmp_path):
    _write(tmp_path / "a" / "x.png", size=(24, 32)); _write(tmp_path / "b" / "x.png", size=(24, 30))
    ds = paired_folders(tmp_path / "a", tmp_path / "b")
    with pytest.raises(ImageError, match="differ in size"):
        list(ds)


def test_unreadable_image_is_an_image_error(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ImageError):
        list(unpaired_dataset(tmp_path / "d"))


def test_synthetic_dataset_is_seeded_per_image(tmp_path):
    for i in range(3): _write(tmp_path / f"img{i}.png", i)
    ds = synthetic_dataset(tmp_path, "gaussian_noise", {"sigma": 30})
    full = {n: y for n, y, _ in ds}
    sub = {n: y for n, y, _ in ds.select(["img2.png", "img0.png"])}
    assert torch.equal(sub["img2.png"], full["img2.png"]) and torch.equal(sub["img0.png"], full["img0.png"])
    assert not torch.equal(full["img0.png"], next(iter(synthetic_dataset(tmp_path, seed=1)))[1])
    assert isinstance(open_dataset(tmp_path, degradation="blur", params={"sigma": 1.0}), SyntheticDataset)
    with pytest.raises(ConfigError, match="unknown degradation"):
        synthetic_dataset(tmp_path, "rain")
    with pytest.raises(ConfigError, match="not in this dataset"):
        ds.select(["img9.png"])
    assert len(ds.select(2)) == 2


def test_max_side_downsamples_pairs_alike(tmp_path):
    _write(tmp_path / "low" / "a.png", size=(40, 60)); _write(tmp_path / "high" / "a.png", size=(40, 60))
    (_, y, x), = list(lol_dataset(tmp_path, max_side=30))
    assert y.shape == x.shape == (1, 3, 20, 30)
    assert fit_max_side(y, None) is y


def test_real_benchmark_folders(shared_dir):
    data = shared_dir / "data"
    assert len(lol_dataset(data / "lol" / "paired")) == 1
    assert len(reside_dataset(data / "sots_indoor")) == 40
    assert not open_dataset(data / "real_lowlight" / "DICM").has_ground_truth
    name, y, x = next(iter(synthetic_dataset(data / "cbsd68", max_side=128)))
    assert x.shape == y.shape and max(y.shape[-2:]) == 128


# ---------------------------------------------------------------- harness and tables
def _tiny_set(n: int = 2, with_gt: bool = True):
    xs = [synthetic_scene(32, 48).roll(5 * i, dims=-1) for i in range(n)]
    return [(f"im{i}", gaussian_noise(x, sigma=20, generator=make_generator(i)).image, x if with_gt else None)
            for i, x in enumerate(xs)]


def test_evaluate_rows_and_table():
    def broken(y):
        raise ConfigError("this method cannot run")
    methods = {"nlm": lambda y: nlm_denoise(y, 20),
               "missing": Unavailable("package not installed"), "broken": broken}
    rows = evaluate(methods, _tiny_set(), metrics=["psnr", "ssim"], keep_outputs=True)
    assert [r.method for r in rows] == [INPUT_ROW, "nlm", "missing", "broken"]
    inp, nlm, missing, broken_row = rows
    assert inp.n_scored == 2 and inp.seconds is None
    assert nlm.scores["psnr"] > inp.scores["psnr"] and nlm.seconds is not None
    assert nlm.per_image[0].output.shape == (1, 3, 32, 48)
    assert missing.scores == {"psnr": None, "ssim": None} and "package not installed" in missing.note
    assert broken_row.note.startswith("failed on im0") and broken_row.n_scored == 0
    table = markdown_table(rows)
    assert "PSNR (dB) ↑" in table and "SSIM ↑" in table and "n/a" in table and DATA_NOTE in table
    assert sum(line.startswith("| ") for line in table.splitlines()) == 5  # header + 4 rows
    assert DATA_NOTE not in markdown_table(rows, notes=())


def test_evaluate_reports_unavailable_metrics_and_no_ground_truth():
    rows = evaluate({"id": lambda y: y}, _tiny_set(with_gt=False),
                    metrics={"psnr": psnr, "lpips": Unavailable("LPIPS weights missing")})
    assert all(r.n_scored == 0 and r.scores["psnr"] is None for r in rows)
    table = markdown_table(rows)
    assert "lpips: LPIPS weights missing" in table and NIQE_NOTE in table


def test_evaluate_inf_psnr_and_formatting():
    rows = evaluate({"oracle": lambda y: y}, [("a", torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))], metrics=["psnr"])
    assert rows[1].scores["psnr"] == math.inf
    assert "| inf |" in markdown_table(rows)


def test_evaluate_rejects_bad_methods_and_empty_sets():
    with pytest.raises(ImageError, match="returned"):
        evaluate({"crop": lambda y: y[..., :8, :8]}, _tiny_set(1), metrics=["psnr"])
    with pytest.raises(ConfigError, match="no samples"):
        evaluate({"id": lambda y: y}, [], metrics=["psnr"])
    with pytest.raises(ConfigError, match="reserved"):
        evaluate({INPUT_ROW: lambda y: y}, _tiny_set(1), metrics=["psnr"])


def test_write_csv_summary_and_per_image(tmp_path):
    rows = evaluate({"id": lambda y: y}, _tiny_set(), metrics=["psnr", "ssim"])
    summary = list(csv.DictReader(open(write_csv(rows, tmp_path / "out" / "table.csv"))))
    assert [r["method"] for r in summary] == [INPUT_ROW, "id"]
    assert float(summary[0]["psnr"]) == pytest.approx(rows[0].scores["psnr"]) and summary[0]["seconds_per_image"] == ""
    per = list(csv.DictReader(open(write_csv(rows, tmp_path / "per.csv", per_image=True))))
    assert len(per) == 4 and per[0]["image"] == "im0"
    with pytest.raises(ConfigError):
        write_csv([], tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="exists"):
        write_csv(rows, tmp_path / "per.csv")
    assert write_csv(rows, tmp_path / "per.csv", overwrite=True).read_text().startswith("method,n_images")
    with pytest.raises(ConfigError, match="must end in .csv"):
        write_csv(rows, tmp_path / "table.png")


def test_bm3d_when_installed():
    pytest.importorskip("bm3d")
    clean = 0.2 + 0.6 * synthetic_scene(32, 48)
    noisy = gaussian_noise(clean, sigma=30, generator=make_generator(0)).image
    assert psnr(bm3d_denoise(noisy, 30), clean).item() > psnr(noisy, clean).item() + 4
