"""Ground truth: models whose log p(x) is known (closed form, enumeration, 2-D quadrature)."""
