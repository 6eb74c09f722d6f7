"""The install files agree with each other, so a conda user and a pip user get the same course."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
NOT_PACKAGES = {"python", "pip"}


def _name_and_bound(spec: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def requirements():
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return dict(_name_and_bound(l) for l in lines if l.strip() and not l.lstrip().startswith("#"))


def conda_environment():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    found = {}
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            name, bound = _name_and_bound(spec)
            if name not in NOT_PACKAGES:
                found[CONDA_TO_PIP.get(name, name)] = bound
    return found


def test_environment_yml_parses_and_names_the_same_packages_with_the_same_bounds():
    assert conda_environment() == requirements()


def test_requirements_have_lower_bounds_only_so_they_install_anywhere():
    for name, bound in requirements().items():
        assert bound.startswith(">="), f"{name} should have a lower bound, got {bound!r}"
        assert "+" not in bound, f"{name} pins a local version that exists on one index only"


def test_package_dependencies_are_part_of_the_course_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = requirements()
    for spec in project["dependencies"]:
        name, bound = _name_and_bound(spec)
        assert reqs.get(name) == bound, f"pyproject names {name}{bound}, requirements.txt {reqs.get(name)}"
