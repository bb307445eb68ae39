"""The page of ``vaelab bounds``: ``bounds.html``, drawn from ``bounds.json`` and the figures' PNGs.

The page is one self-contained file (figures embedded as data URIs), rendered from the Jinja2
template ``templates/bounds.html`` (see :mod:`vaelab.studies.pages`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jinja2

from vaelab.errors import RunError
from vaelab.runio import BOUNDS_PAGE_FILE as PAGE_FILE
from vaelab.runio import BOUNDS_RESULTS_FILE as RESULTS_FILE
from vaelab.runio import write_text_atomic
from vaelab.studies.bounds.figures import FIGURES
from vaelab.studies.pages import png_data_uri, render_page


def _table_columns(ks: list[int]) -> list[int]:
    """Indices of the k shown in the page's tables: the powers of ten."""
    return [index for index, k in enumerate(ks) if math.log10(k).is_integer()]


def write_page(out_dir: str | Path) -> Path:
    """Render ``bounds.html`` in ``out_dir`` from the results and figures there; returns its path."""
    out_dir = Path(out_dir)
    try:
        results = json.loads((out_dir / RESULTS_FILE).read_text())
        images = {key: png_data_uri(out_dir / f"{name}.png") for key, name in FIGURES.items()}
    except OSError as error:
        raise RunError(f"{out_dir}: cannot read the results and figures to draw the page from ({error.strerror}: {error.filename})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RunError(f"{out_dir / RESULTS_FILE}: not valid JSON ({type(error).__name__}); run 'vaelab bounds' again") from None
    try:
        page = render_page(PAGE_FILE, results=results, images=images, figures=FIGURES, columns=_table_columns(results["settings"]["ks"]))
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, jinja2.UndefinedError) as error:
        raise RunError(f"{out_dir / RESULTS_FILE}: not the results of 'vaelab bounds' ({type(error).__name__}: {error}); run it again") from None
    write_text_atomic(out_dir / PAGE_FILE, page)
    return out_dir / PAGE_FILE
