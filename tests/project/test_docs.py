"""The documentation works: the examples run, the README's and the guide's code blocks run, and
the site (API reference included) builds with every warning an error.

Code blocks: ```bash and ```python blocks are run, page by page, in order, in a fresh directory;
```shell (and ```text) blocks are shown only (real datasets, GPUs, hours). Every `--epochs N` (and
`epochs=N`) is divided by 5, rounded up, unless VAELAB_DOCS_FULL_EPOCHS=1 (docs/contributing.md).
"""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.e2e

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs" / "guide").glob("*.md"))]
RUN_LANGUAGES = ("bash", "python")
SHOWN_LANGUAGES = ("shell", "text")

# Each example's last line of output (--smoke), as its docstring's "Expected output" shows it.
EXAMPLES = {
    "own_data.py": r"own data: test L_100 = -\d+\.\d\d nats over 300 images",
    "own_networks.py": r"own networks: encoder mynets\.py:encoder, test L_100 = -\d+\.\d\d nats",
    "score_new_images.py": r"L_1\d+ of 4 new images:( -\d+\.\d){4} nats",
    "ais_on_run.py": r"first \d+ test images: L_16 = -\d+\.\d\d, AIS \(T=\d+, M=16\) = -\d+\.\d\d nats",
}
HELPER_FILES = {"mynets.py"}  # imported by an example, not run on its own

FENCE = re.compile(r"^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.MULTILINE | re.DOTALL)
# Set-up steps a test must not repeat: the environment is this one, and pytest is already running.
SET_UP = re.compile(r"^(python3 -m venv\b|\. \.venv/bin/activate|source \.venv|pip install\b|pytest\b)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in page order."""
    return [(match.group(1), match.group(2)) for match in FENCE.finditer(text)]


def shortened(code: str) -> str:
    """``code`` with every epoch count divided by 5 (rounded up), unless VAELAB_DOCS_FULL_EPOCHS is set."""
    if os.environ.get("VAELAB_DOCS_FULL_EPOCHS"):
        return code
    return re.sub(r"(--epochs[ =]|epochs=)(\d+)", lambda m: f"{m.group(1)}{math.ceil(int(m.group(2)) / 5)}", code)


def without_set_up(code: str) -> str:
    """A bash block without its venv/pip/pytest steps (each `a && b` part judged on its own)."""
    lines = []
    for line in code.splitlines():
        parts = [part for part in line.split(" && ") if not SET_UP.match(part.strip())]
        lines.append(" && ".join(parts))
    return "\n".join(lines)


def _environment() -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg")
    # `vaelab` and `python` in a block are this interpreter's
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(command: list[str], cwd: Path, what: str) -> str:
    done = subprocess.run(command, cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{what} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO_ROOT))


def test_every_code_block_says_whether_it_runs():
    for page in PAGES:
        for language, code in fenced_blocks(page.read_text()):
            assert language in RUN_LANGUAGES + SHOWN_LANGUAGES, f"{_page_id(page)}: a ```{language} block (use bash/python to run it, shell/text to show it):\n{code}"
    readme = fenced_blocks((REPO_ROOT / "README.md").read_text())
    assert [language for language, _ in readme].count("bash") >= 3  # the two set-up commands and the tour


def test_readme_is_short_and_its_links_exist():
    text = (REPO_ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#]*)", text):
        assert (REPO_ROOT / target).exists(), f"README links to {target}, which does not exist"


def test_the_set_up_step_filter_keeps_the_vaelab_command():
    main = "python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e . && vaelab compare --out runs/compare"
    assert without_set_up(main) == "vaelab compare --out runs/compare"
    assert without_set_up('python3 -m venv .venv && pip install -e ".[test]" && pytest').strip() == ""
    assert shortened("vaelab train --epochs 10 --eval-every 5") == "vaelab train --epochs 2 --eval-every 5"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if any(lang in RUN_LANGUAGES for lang, _ in fenced_blocks(p.read_text()))], ids=_page_id)
def test_code_blocks_of_page_run(page, tmp_path):
    # README's tour names examples/mynets.py relative to the checkout
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    for number, (language, code) in enumerate(fenced_blocks(page.read_text()), start=1):
        what = f"{_page_id(page)}, block {number} ({language})"
        if language == "bash":
            script = shortened(without_set_up(code))
            if script.strip():
                _run(["bash", "-e", "-o", "pipefail", "-c", script], tmp_path, what)
        elif language == "python":
            _run([sys.executable, "-c", shortened(code)], tmp_path, what)


def _expected_line(script: Path) -> str:
    """The indented line after 'Expected output' in the example's docstring."""
    doc = ast.get_docstring(ast.parse(script.read_text()))
    after = doc.split("Expected output", 1)[1]
    return next(line.strip() for line in after.splitlines() if line.startswith("    "))


def test_every_example_is_run_and_documents_its_output():
    scripts = {path.name for path in (REPO_ROOT / "examples").glob("*.py")} - HELPER_FILES
    assert scripts == set(EXAMPLES)
    for name, pattern in EXAMPLES.items():
        expected = _expected_line(REPO_ROOT / "examples" / name)
        assert re.fullmatch(pattern, expected), f"examples/{name}: its docstring's expected output {expected!r} is not what the test checks"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_runs_at_smoke_size(name, tmp_path):
    out = _run([sys.executable, str(REPO_ROOT / "examples" / name), "--smoke"], tmp_path, f"examples/{name} --smoke")
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(EXAMPLES[name], last), f"examples/{name}: last line {last!r}"


def test_docs_build_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -c constraints.txt -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings is not installed: pip install -c constraints.txt -e '.[docs]'")
    site = tmp_path / "site"
    _run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO_ROOT / "mkdocs.yml"), "-d", str(site)], REPO_ROOT, "mkdocs build --strict")
    # the API reference is generated from the docstrings, not left empty
    assert "vaelab.estimators.bounds.evaluate_bound" in (site / "api" / "index.html").read_text()
    assert "importance_samples" in (site / "api" / "objectives" / "index.html").read_text()
