"""settings.ini mirrors the nbdev keys of pyproject.toml (the source of truth) for nbdev-2-era tooling."""
import configparser
import re
import tomllib
from pathlib import Path

import ldrps_nb

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INI = configparser.ConfigParser()
INI.read(ROOT / "settings.ini")
S = INI["DEFAULT"]
NBDEV = PYPROJECT["tool"]["nbdev"]
PROJECT = PYPROJECT["project"]


def _bool(v) -> str: return str(v).lower()


def test_nbdev_keys_match():
    for key in ["nbs_path", "lib_path", "doc_path", "tst_flags", "readme_nb"]:
        assert S[key] == str(NBDEV[key]), key
    for key in ["exec_profile", "clean_ids", "clear_all", "jupyter_hooks"]:
        assert _bool(S[key]) == _bool(NBDEV[key]), key


def test_project_keys_match():
    assert S["repo"] == PROJECT["name"]
    assert S["lib_name"] == PROJECT["name"].replace("-", "_") == NBDEV["lib_path"]
    assert S["description"] == PROJECT["description"]
    assert S["keywords"].split() == PROJECT["keywords"]
    assert S["min_python"] == PROJECT["requires-python"].lstrip(">=")
    assert S["version"] == ldrps_nb.__version__


def test_requirements_match():
    assert S["requirements"].split() == PROJECT["dependencies"]
    assert S["dev_requirements"].split() == PROJECT["optional-dependencies"]["dev"]


def test_version_is_pep440():
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.post\d+|\.dev\d+|rc\d+)?", ldrps_nb.__version__)
