"""Experiments built on the library: each a run, its figures and its page; drawing never trains."""
