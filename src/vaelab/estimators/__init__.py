"""Estimators of log p(x): the importance-weighted bound L_k and its curves over k."""
