"""Estimators of log p(x): the importance-weighted bound L_k and its curves (bounds), annealed importance
sampling with bidirectional Monte Carlo (ais), Pareto k-hat of importance weights (pareto), and
active-unit folding of one-hidden-layer ReLU decoders (folding)."""
