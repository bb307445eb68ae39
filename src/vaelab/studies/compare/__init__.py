"""The compare study (wake-sleep against AEVB and others): ``run`` trains the algorithms alike,
``report`` rebuilds figures and ``report.html`` from saved results (``analysis``: what is computed
from trained models; ``figures``; ``summary``: the numbers and sentences)."""
