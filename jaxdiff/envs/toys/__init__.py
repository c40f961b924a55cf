"""Small analytic environments for tests and calibrated experiments.

Importing this package registers them (`jaxdiff.envs.make("coordination_game")`,
`make("ddpl_toy_sa")`, `make("ddpl_toy_ma", n_agents=2)`, and HAQO's `make("haqo_bandit")`,
`make("haqo_occupation")`, `make("haqo_landmarks")`).
"""
from jaxdiff.envs.toys import coordination  # noqa: F401
from jaxdiff.envs.toys import ddpl_toy  # noqa: F401  (registers ddpl_toy_sa, ddpl_toy_ma)
from jaxdiff.envs.toys import haqo_toys  # noqa: F401  (registers haqo_bandit, haqo_occupation, ...)
