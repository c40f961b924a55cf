"""HAA2C: its first update is the plain M-weighted policy gradient; smoke run via the runner."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff.envs.toys  # noqa: F401  (registers coordination_game)
from jaxdiff import envs
from jaxdiff.algos import base, haa2c, onpolicy, sequential


def test_unclipped_surrogate_gradient_is_weighted_policy_gradient():
    """At theta_old the HAA2C loss gradient is -E[M * A * grad log pi] (A2C's, M-weighted),
    and HAPPO's clipped loss has the same gradient there (the ratio is 1, inside the clip)."""
    env = envs.make("coordination_game", n_agents=2, n_actions=3)
    cfg = base.make_config(haa2c.Config, dict(num_envs=4, num_steps=2, hidden=8))
    p = sequential.parts(env, cfg)
    state = jax.jit(lambda k: haa2c.init(k, env, cfg))(jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x[0], state.actor)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    T, B = 1, 8
    mb = dict(a_x=jnp.ones((T, B, 1)), mask=jnp.ones((T, B, 3), bool),
              reset=jnp.zeros((T, B), bool), ca0=jnp.zeros((B, 8)),
              action=jax.random.randint(k1, (T, B), 0, 3), adv=jax.random.normal(k2, (T, B)),
              factor=jnp.exp(0.3 * jax.random.normal(k3, (T, B))))
    logp = lambda th: onpolicy.log_prob_entropy(p, sequential.agent_forward(p, th, mb),
                                                mb["action"], None)[0]
    mb["logp"] = logp(params)
    grads = {}
    for name, clipped in (("a2c", False), ("ppo", True)):
        # lr = 0: the update leaves params unchanged; read the gradient norm it reports
        upd = sequential.surrogate_update(p, cfg.replace(num_envs=B, num_steps=1), state.hp, 0.0,
                                          clipped=clipped)
        _, _, aux = upd(0, params, jax.tree.map(lambda x: x[0], state.actor_opt), mb,
                        jax.random.PRNGKey(2))
        grads[name] = aux["grad_norm"]
    ref = jax.grad(lambda th: -(mb["factor"] * mb["adv"] * logp(th)).mean()
                   - cfg.ent_coef * onpolicy.log_prob_entropy(
                       p, sequential.agent_forward(p, th, mb), mb["action"], None)[1].mean())
    ref_norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(ref(params))))
    np.testing.assert_allclose(grads["a2c"], ref_norm, rtol=1e-4)
    np.testing.assert_allclose(grads["ppo"], ref_norm, rtol=1e-4)

