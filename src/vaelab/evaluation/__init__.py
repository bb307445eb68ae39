"""The evaluation protocol and the evaluation of saved runs (L_k, exact gaps)."""
