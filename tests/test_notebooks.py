"""Every chapter notebook runs as one test, through nbdev's own runner with the project's skip flags."""
from pathlib import Path

import pytest
from nbdev import test as nbdev_test  # the module, so pytest does not collect `test_nb` as a test
from nbdev.config import get_config

CFG = get_config(Path(__file__).resolve().parent)
SKIP_FLAGS = str(CFG.tst_flags).split()
NOTEBOOKS = sorted(p for p in Path(CFG.nbs_path).glob("*.ipynb") if not p.name.startswith("_"))


def test_notebooks_found():
    assert NOTEBOOKS, f"no notebooks in {CFG.nbs_path}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(notebook: Path):
    ok, seconds = nbdev_test.test_nb(notebook, skip_flags=SKIP_FLAGS, do_print=False)
    assert ok, f"{notebook.name} failed after {seconds:.1f}s (the cell's traceback is printed above)"
