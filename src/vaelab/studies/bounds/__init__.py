"""The bounds study: L_k against k beside exact log p(x), and the counterexample of unbounded weights."""
