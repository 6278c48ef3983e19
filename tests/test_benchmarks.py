"""The benchmark scripts stay runnable: a GPU session is short, so the prepared device script must not rot unseen."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE_CHECK = ROOT / "benchmarks" / "device_check.sh"


def test_device_check_is_valid_bash():
    subprocess.run(["bash", "-n", str(DEVICE_CHECK)], check=True)


def test_device_check_uses_only_options_speed_py_has():
    script = DEVICE_CHECK.read_text()
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", "\n".join(l for l in script.splitlines()
                                                                     if "speed.py" in l or l.startswith("step speed"))))
    help_text = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--help"], check=True,
                               capture_output=True, text=True).stdout
    assert used, "no speed.py options found in device_check.sh"
    missing = sorted(o for o in used if o not in help_text)
    assert not missing, f"device_check.sh passes options speed.py does not have: {missing}"
