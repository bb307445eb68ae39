"""The study report: figures (``figures``), the numbers and sentences (``summary``), what is computed
from trained models (``analysis``), and ``build_report``, which puts them into ``report.html``."""

from vaelab.report.build import Report, build_report

__all__ = ["Report", "build_report"]
