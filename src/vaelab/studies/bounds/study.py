"""``vaelab bounds`` as one call: the experiments (:mod:`.run`), their figures (:mod:`.figures`) and
the page (:mod:`.page`), under the output directory's lock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaelab.runio import directory_lock, make_directory
from vaelab.studies.bounds.figures import write_figures
from vaelab.studies.bounds.page import write_page
from vaelab.studies.bounds.run import StudySettings, run_study


def bounds_study(
    out_dir: str | Path,
    run_dir: str | Path | None = None,
    settings: StudySettings = StudySettings(),
    data_dir=None,
    progress: bool = False,
    trust_code: bool = False,
) -> tuple[dict[str, Any], Path]:
    """Run every experiment into ``out_dir`` (:func:`.run.run_study`), draw the figures and write
    ``bounds.html``; returns the results and the page's path. The directory is locked throughout,
    so a second ``vaelab bounds`` there is refused in one line and never sees half a page.
    ``trust_code``: ``run_dir`` may name user networks, whose code then runs (:func:`vaelab.builders.require_trust`)."""
    make_directory(out_dir, "output directory")
    with directory_lock(out_dir, "bounds"):
        results = run_study(out_dir, run_dir, settings, data_dir=data_dir, progress=progress, trust_code=trust_code)
        write_figures(results, out_dir)
        return results, write_page(out_dir)
