"""The install files agree with each other and with README, so a conda user, a pip user and CI get the same course."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge names that differ from PyPI's
NOT_PACKAGES = {"python", "pip"}
TEST_TOOLS = {"pytest", "nbval", "pyyaml", "pytest-xdist", "playwright"}  # what the suite imports or runs


def _name_and_bound(spec: str):
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _lines(file):
    return [l.strip() for l in (ROOT / file).read_text().splitlines() if l.strip() and not l.lstrip().startswith("#")]


def requirements(file="requirements.txt"):
    return dict(_name_and_bound(l) for l in _lines(file) if not l.startswith("-"))


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


def test_the_course_needs_no_test_tools_and_the_dev_file_adds_them_without_touching_torch():
    assert not TEST_TOOLS & set(requirements()), "a learner should not install the test tools"
    assert _lines("requirements-dev.txt")[0] == "-r requirements.txt"
    dev = requirements("requirements-dev.txt")
    assert TEST_TOOLS <= set(dev)
    assert "torch" not in dev, "requirements-dev.txt must never name torch: pip could replace the CPU build"
    assert all("+" not in bound for bound in dev.values())


def test_package_dependencies_are_part_of_the_course_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = requirements()
    for spec in project["dependencies"]:
        name, bound = _name_and_bound(spec)
        assert reqs.get(name) == bound, f"pyproject names {name}{bound}, requirements.txt {reqs.get(name)}"


def _readme_blocks():
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_readme_install_and_test_commands_verbatim():
    blocks = _readme_blocks()
    quickstart = blocks[0].strip()
    install = next(part for part in quickstart.split(" && ") if part.startswith("pip install"))
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in install  # CPU learners get no CUDA wheels
    test_command = blocks[1].strip()
    assert "pip install -r requirements-dev.txt" in test_command and "python -m pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert install in ci.splitlines()
    assert test_command in ci.splitlines()
