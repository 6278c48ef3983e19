"""Headless tests of chapter 10 (widgets): the recorder's memory bound, and every widget driven through its controls.

Widgets are checked by what their `ipywidgets.Image` children hold (PNG bytes), never through an `Output` widget,
which captures nothing without a front end."""
import dataclasses
import io

import pytest
import torch
from PIL import Image

from ldrps_nb.core import ConfigError, ImageError
from ldrps_nb.widgets import (TrajectoryRecorder, compare, compare_figure, compare_view, figure_png, frame_at,
                              loss_curves, loss_figure, png_bytes, swipe, synthetic_trajectory, trajectory_figure,
                              trajectory_viewer, zoom_crop)


@pytest.fixture(scope="module")
def recording() -> TrajectoryRecorder:
    return TrajectoryRecorder.from_records(synthetic_trajectory(steps=12, recurrences=2, size=24), every=3)


def _size(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def test_recorder_memory_bound_2000_records():
    probe = TrajectoryRecorder.from_records(synthetic_trajectory(steps=1, recurrences=0, size=32))
    budget = 25 * probe.frames[0].nbytes + probe.target.numel()
    rec = TrajectoryRecorder(every=1, max_bytes=budget)
    peak = 0
    for r in synthetic_trajectory(steps=1000, recurrences=2, size=32):
        rec(r)
        peak = max(peak, rec.nbytes)
    assert len(rec) == 2000
    assert peak <= budget
    assert len(rec.frames) <= 25 and rec.frames[0].step == 0 and rec.frames[-1].step == 1999
    assert all(len(v) == 2000 for v in rec.losses.values())     # scalars for every step


def test_recorder_downsamples_and_thins_to_grid():
    rec = TrajectoryRecorder(every=2, max_side=16)
    for r in synthetic_trajectory(steps=40, recurrences=0, size=64): rec(r)
    assert rec.frames[0].x0.shape == (2, 3, 16, 16) and rec.frames[0].x0.dtype == torch.uint8
    assert rec.target.shape == (3, 16, 16)
    assert [f.step for f in rec.frames] == list(range(0, 40, 2)) + [39]
    small = TrajectoryRecorder(every=1, max_side=16, max_bytes=6 * rec.frames[0].nbytes + rec.target.numel())
    for r in synthetic_trajectory(steps=40, recurrences=0, size=64): small(r)
    grid = [f.step for f in small.frames[:-1]]
    assert all(s % small.stride == 0 for s in grid) and small.frames[-1].step == 39


def test_recorder_missing_loss_keys_are_nan():
    rs = list(synthetic_trajectory(steps=3, recurrences=0, size=8))
    rs[1] = dataclasses.replace(rs[1], losses={**rs[1].losses, "extra": 1.0})
    rec = TrajectoryRecorder.from_records(rs)
    extra = loss_curves(rec)["losses"]["extra"]
    assert torch.isnan(torch.tensor(extra[[0, 2]])).all() and extra[1] == 1.0


def test_recorder_bad_settings():
    with pytest.raises(ConfigError): TrajectoryRecorder(every=0)
    with pytest.raises(ConfigError, match="fewer than 2 frames"):
        TrajectoryRecorder(max_bytes=10)(next(synthetic_trajectory(steps=1, size=16)))
    with pytest.raises(ConfigError, match="empty"): frame_at(TrajectoryRecorder(), 0)


def test_trajectory_viewer_slider_and_pass(recording):
    v = trajectory_viewer(recording, gain=2.0)
    last = len(recording) - 1
    assert v.slider.value == last
    plot0 = v.plot.value
    v.slider.value = 4
    for p, w in v.images.items(): assert w.value == png_bytes(frame_at(recording, 4, gain=2.0)[p])
    assert v.plot.value != plot0 and _size(v.plot.value)[0] > 100
    v.pass_select.value = 2
    lo, hi = recording.pass_steps(2)
    assert (v.slider.min, v.slider.max, v.slider.value) == (lo, hi, lo)
    assert v.images["x0_posterior"].value == png_bytes(frame_at(recording, lo)["x0_posterior"])


def test_trajectory_figure_cursor(recording):
    fig = trajectory_figure(recording, 7)
    cursors = [l for ax in fig.axes for l in ax.lines if l.get_gid() == "cursor"]
    assert len(cursors) == 1 and list(cursors[0].get_xdata()) == [7, 7]
    assert figure_png(loss_figure(recording, 1)) != figure_png(loss_figure(recording, 8))


def test_swipe_and_zoom_values():
    b, a = torch.zeros(3, 6, 10), torch.ones(3, 6, 10)
    assert swipe(b, a, 0.5)[0, 0].tolist() == [0.0] * 5 + [1.0] * 5
    z = zoom_crop(torch.arange(10.).div(9).expand(3, 6, 10), x=1.0, zoom=5)
    assert z.shape == (3, 6, 10) and torch.allclose(z[0, 0, -1], torch.tensor(1.0))
    with pytest.raises(ImageError): swipe(torch.zeros(2, 3, 4, 4), a, 0.5)


def test_compare_widget_bytes_follow_controls():
    b, a = torch.rand(1, 3, 20, 30, generator=torch.Generator().manual_seed(0)), torch.rand(1, 3, 20, 30)
    cw = compare(b, a)
    first = cw.image.value
    cw.split.value = 0.1
    assert cw.image.value != first and cw.image.value == png_bytes(compare_view(b, a, split=0.1))
    cw.mode.value = "blend"
    cw.zoom.value = 2.0
    assert cw.image.value == png_bytes(compare_view(b, a, mode="blend", split=0.1, zoom=2.0))
    assert _size(cw.image.value) == (30, 20)
    fig = compare_figure(b, a, 0.3, zoom=2)
    assert len(fig.axes) == 4


def test_trajectory_viewer_pass_back_and_forth(recording):
    v = trajectory_viewer(recording)
    for p in (2, 0, 1, -1, 2):
        lo, hi = (0, len(recording) - 1) if p < 0 else recording.pass_steps(p)
        v.pass_select.value = p
        assert (v.slider.min, v.slider.max, v.slider.value) == (lo, hi, lo)
        assert v.images["x0_free"].value == png_bytes(frame_at(recording, lo)["x0_free"])


def test_explore_run_button_tiny_backbone():
    from ldrps_nb.backbone import tiny_backbone
    from ldrps_nb.losses import vgg_perceptual
    from ldrps_nb.widgets import explore, explore_figure

    seen = TrajectoryRecorder(every=1)
    ex = explore(torch.rand(1, 3, 40, 48) * 0.3, tiny_backbone(), captioner=lambda im: "a test caption", steps=4,
                 recurrences=0, perceptual=vgg_perceptual(None), callback=seen)
    assert ex.controls["caption"].value == "a test caption" and ex.controls["steps"].value == 4
    ex.run_button.click()
    assert len(ex.entries) == 1 and len(ex.gallery.children) == 2
    assert (ex.progress.value, ex.progress.max) == (4, 4) and len(seen) == 4
    entry = ex.entries[0]
    assert entry.settings["caption"] == "a test caption" and entry.settings["steps"] == 4
    assert ex.gallery.children[1].children[0].value == png_bytes(entry.image)
    assert ex.last_result is not None and ex.last_result.image.shape == (1, 3, 40, 48)
    assert len(explore_figure(ex.entries).axes) == 1
    ex.controls["steps"].value = 1
    ex.controls["recurrences"].value = 1
    ex.run_button.click()          # strength 0.5 of 1 step leaves no timesteps: a ConfigError, shown in the status
    assert len(ex.entries) == 1 and "ConfigError" in ex.status.value
    with pytest.raises(ConfigError, match="sets"):
        explore(torch.rand(1, 3, 8, 8), None, prompt="x")
