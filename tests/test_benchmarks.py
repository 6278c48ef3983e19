"""The benchmark scripts stay runnable: a GPU session is short, so the prepared device script must not rot unseen."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CHECK = ROOT / "benchmarks" / "device_check.sh"


def test_device_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(DEVICE_CHECK)], check=True)


def test_device_check_uses_only_options_the_scripts_have():
    lines = DEVICE_CHECK.read_text().replace("\\\n", " ").splitlines()
    for script, marker in [("speed.py", "step speed"), ("memory.py", "step memory")]:
        used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", "\n".join(l for l in lines
                                                                         if script in l or l.startswith(marker))))
        help_text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], check=True,
                                   capture_output=True, text=True).stdout
        assert used, f"no {script} options found in device_check.sh"
        missing = sorted(o for o in used if o not in help_text)
        assert not missing, f"device_check.sh passes options {script} does not have: {missing}"


def _memory_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import memory
    finally:
        sys.path.pop(0)
    return memory


def test_live_tensor_bytes_counts_what_an_allocator_holds():
    import torch
    live = _memory_module().LiveTensorBytes()
    with live:
        a = torch.zeros(1000, 250)                     # 1 MB
        b = a + 1                                      # 1 MB more
        a.view(-1).add_(1)                             # a view and an in-place op: nothing new
        assert live.now == 2_000_000
        del b                                          # freed: back to 1 MB, the peak stays
        assert (live.now, live.peak) == (1_000_000, 2_000_000)
        x = torch.ones(500, 500, requires_grad=True)   # 1 MB (a leaf made inside the mode)
        (x * 2).sum().backward()                       # x.grad: 1 MB; the graph is freed after the backward pass
        assert live.now == 3_000_000, live.now


def test_memory_py_runs_its_help():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--help"], check=True,
                         capture_output=True, text=True).stdout
    assert "--resolution" in out and "--rows" in out


def test_device_check_asks_memory_py_for_rows_it_has():
    rows = re.search(r'memory\.py[^\n]*\\\n[^\n]*--rows "([^"]+)"', DEVICE_CHECK.read_text()).group(1).split(",")
    assert rows and set(rows) <= set(_memory_module().ROWS), rows
