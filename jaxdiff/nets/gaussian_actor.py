"""A per-agent tanh-squashed Gaussian policy over [-1, 1]^A with the same calling shapes as
`DiffusionActor` (parameters stacked on an agent axis, no sharing), for ablations that swap the
policy class and keep the rest of an algorithm's pipeline (HAQO's `actor=gaussian`, spec-haqo
§7 F23; the "weighted-MLE Gaussian" of spec §9).

    actor = GaussianActor(act_dim=2, hidden=64, layers=2)
    params = actor.init(key, n_agents, cond_dim)                 # leaves [n, ...]
    x = actor.sample(params, cond, key)                          # cond [..., n, C] -> [..., n, A]
    mean, log_std = actor.dist(params, cond)                     # latent (pre-tanh) Gaussian
    nll = actor.nll(mean, log_std, x, mask)                      # -log pi(x | cond), [..., n]
    ce = actor.uniform_cross_entropy(mean, log_std, mask)        # E_{u~U[-1,1]^A} -log pi(u)
    kl = actor.kl(params_old, params_new, cond)                  # KL(pi_old || pi_new), [..., n]

Why tanh and not a clip: the squash is a bijection from R^A onto (-1, 1)^A, so the density of
x = tanh(z) is exact (log N(atanh x; mu, sigma) - sum log(1 - x^2)), the weighted maximum
likelihood of squashed samples is the ordinary weighted Gaussian MLE of their latents atanh(x)
(closed form: the weighted mean and standard deviation), and the KL between two squashed
policies equals the KL of their latent Gaussians (KL is invariant under a shared bijection).
A clip would put point masses on the box faces that a density cannot score. Targets on the
faces themselves (the analog one-hot targets +-1 of discrete actions) are pulled inside to
+-`EDGE` before atanh.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from jaxdiff.nets.agents import apply_agents, init_agents
from jaxdiff.nets.mlp import ACTIVATIONS, MLP

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0   # latent std in [0.0067, 2.7]: deterministic to box-wide
EDGE = 0.999                           # |x| cap before atanh: latent targets stay within +-3.8
# E_{u ~ U[-1, 1]} atanh(u)^2 = pi^2 / 12 and E log(1 - u^2) = 2 log 2 - 2 (both exact integrals)
_UNIFORM_LATENT_SQ = math.pi ** 2 / 12.0
_UNIFORM_LOG_JAC = 2.0 * math.log(2.0) - 2.0


@dataclasses.dataclass(frozen=True)
class GaussianActor:
    """Per-agent pi_i(x | cond_i) = tanh_# N(mu_i(cond_i), diag sigma_i(cond_i)^2): an MLP on
    the agent's conditioning gives the latent mean and a state-dependent log-std (clipped to
    [LOG_STD_MIN, LOG_STD_MAX]). Static and hashable, like `DiffusionActor`; every method is
    pure. The output layer starts near zero (scale 0.01): mu ~ 0 and sigma ~ 1, a broad start."""
    act_dim: int
    hidden: int = 256
    layers: int = 3
    activation: str = "mish"

    def __post_init__(self):
        if self.act_dim < 1 or self.hidden < 1 or self.layers < 1:
            raise ValueError(f"GaussianActor needs act_dim, hidden and layers >= 1, got "
                             f"act_dim={self.act_dim}, hidden={self.hidden}, "
                             f"layers={self.layers}.")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"GaussianActor(activation={self.activation!r}): expected one of "
                             f"{sorted(ACTIVATIONS)}.")

    def net(self) -> MLP:
        return MLP((self.hidden,) * self.layers, self.activation, out=2 * self.act_dim,
                   out_scale=0.01)

    def init(self, key, n_agents: int, cond_dim: int):
        """n_agents independent parameter sets, leaves [n_agents, ...]."""
        return jax.jit(lambda k: init_agents(self.net(), k, n_agents, False,
                                             jnp.zeros((cond_dim,))))(key)

    def dist(self, params, cond):
        """Latent Gaussian of every agent: cond [..., n, C] -> (mean, log_std) [..., n, A]."""
        out = apply_agents(self.net(), params, False, cond, agent_axis=cond.ndim - 2)
        mean, log_std = jnp.split(out, 2, -1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, params, cond, key):
        """x = tanh(mu + sigma z): cond [..., n, C] -> [..., n, A] in (-1, 1)."""
        mean, log_std = self.dist(params, cond)
        return jnp.tanh(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape))

    def mode(self, params, cond):
        """tanh(mu): the squashed latent mode (the deterministic action)."""
        return jnp.tanh(self.dist(params, cond)[0])

    @staticmethod
    def latent(x):
        """atanh of x pulled inside the open box to +-EDGE."""
        return jnp.arctanh(jnp.clip(x, -EDGE, EDGE))

    @staticmethod
    def nll(mean, log_std, x, mask=None):
        """-log pi(x) of squashed actions x [..., A] (exact change of variables), summed over
        the real dims (`mask` broadcastable to [..., A]) -> [...]."""
        z = GaussianActor.latent(x)
        u = (z - mean) * jnp.exp(-log_std)
        per_dim = (0.5 * u * u + log_std + 0.5 * math.log(2 * math.pi)
                   + jnp.log1p(-jnp.clip(x, -EDGE, EDGE) ** 2))
        return jnp.sum(per_dim if mask is None else per_dim * mask, -1)

    @staticmethod
    def uniform_cross_entropy(mean, log_std, mask=None):
        """E_{u ~ U([-1, 1]^A)} -log pi(u), in closed form, summed over the real dims -> [...]:
        per dim log sigma + log(2 pi)/2 + (pi^2/12 + mu^2)/(2 sigma^2) + 2 log 2 - 2 (the latent
        atanh(u) has mean 0 and second moment pi^2/12). The Gaussian counterpart of a diffusion
        policy's denoising loss on uniform actions (an upper bound on the same cross-entropy):
        minimising it alone gives mu = 0, sigma^2 = pi^2/12, the latent moments of the uniform."""
        per_dim = (log_std + 0.5 * math.log(2 * math.pi)
                   + (_UNIFORM_LATENT_SQ + mean ** 2) * 0.5 * jnp.exp(-2.0 * log_std)
                   + _UNIFORM_LOG_JAC)
        return jnp.sum(per_dim if mask is None else per_dim * mask, -1)

    @staticmethod
    def entropy(log_std, mask=None):
        """Entropy of the LATENT Gaussian (the squashed one has no closed form), [...]."""
        per_dim = log_std + 0.5 * (1.0 + math.log(2 * math.pi))
        return jnp.sum(per_dim if mask is None else per_dim * mask, -1)

    def kl(self, params_old, params_new, cond, mask=None):
        """KL(pi_old || pi_new) per state and agent: cond [..., n, C] -> [..., n]. Exact for the
        squashed policies (the shared tanh leaves KL unchanged); `mask` [n, A] or broadcastable
        drops padded dims."""
        m0, s0 = self.dist(params_old, cond)
        m1, s1 = self.dist(params_new, cond)
        per_dim = (s1 - s0 + (jnp.exp(2 * s0) + (m0 - m1) ** 2) * 0.5 * jnp.exp(-2 * s1) - 0.5)
        return jnp.sum(per_dim if mask is None else per_dim * mask, -1)
