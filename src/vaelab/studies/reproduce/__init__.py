"""Reproductions of published tables: presets as data, their runs and their reports."""
