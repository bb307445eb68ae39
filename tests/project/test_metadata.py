"""The package's metadata: it ships py.typed (PEP 561), and CITATION.cff states its name, version and licence."""

from __future__ import annotations

import importlib.resources
import re
import tomllib

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.algebra


def test_the_package_ships_py_typed():
    assert importlib.resources.files("vaelab").joinpath("py.typed").is_file()
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["vaelab"]
    assert "py.typed" in package_data  # so that a built wheel carries it too


def test_citation_cff_names_the_version_and_licence_of_pyproject():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    text = (REPO_ROOT / "CITATION.cff").read_text()
    for key, value in {"cff-version": "1.2.0", "version": project["version"], "license": project["license"]}.items():
        assert re.search(rf"^{key}: {re.escape(value)}$", text, re.M), key
    # a YAML parser is no dependency of vaelab: the few lines CITATION.cff needs are checked as text
    assert re.search(r"^title: .+$", text, re.M) and re.search(r"^authors:\n  - name: .+$", text, re.M)
    assert "MIT License" in (REPO_ROOT / "LICENSE").read_text()
