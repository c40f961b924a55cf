"""Small analytic environments for tests and calibrated experiments.

Importing this package registers them (`jaxdiff.envs.make("coordination_game")`,
`make("ddpl_toy_sa")`, `make("ddpl_toy_ma", n_agents=2)`).
"""
from jaxdiff.envs.toys import coordination  # noqa: F401
from jaxdiff.envs.toys import ddpl_toy  # noqa: F401  (registers ddpl_toy_sa, ddpl_toy_ma)
