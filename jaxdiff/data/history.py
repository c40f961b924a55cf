"""Local action-observation history encoding τ_i for history-conditioned denoisers.

For agent i at step t, with window length H (spec §1.2, most recent first):

    τ_i^t = [ onehot_n(i),  o_i^t, act(a_i^{t-1}),  o_i^{t-1}, act(a_i^{t-2}),  ...,
              o_i^{t-H+1}, act(a_i^{t-H}) ]                      dim = n + H * (obs_dim + act_feat)

`act(a)` is the one-hot of a discrete action (`act_feat = n_actions`), the action vector of a
continuous one (`act_feat = act_dim`), or nothing (`n_actions = 0`, e.g. sensor networks whose
observations do not depend on actions). Blocks older than the current episode are zeros: a window
never crosses an episode boundary, and the action block of an episode's first step is zero.

Two equivalent implementations:

* the online encoder, a carry updated once per step (scan- and vmap-friendly, for rollouts):

      spec = HistorySpec(n_agents=5, obs_dim=127, n_actions=10, history=5)
      carry = init(spec)                                    # zeros: f32[n, H, block]
      carry = push(spec, carry, obs, prev_action, first)    # obs [n, obs_dim], first: bool[]
      tau = encode(spec, carry)                             # [n, spec.dim]

  `first` says `obs` is the first observation of an episode (the env's `done` of the step before;
  True at the very first step); `prev_action` is the action taken at the previous step
  (ignored when `first`).

* `windows(spec, obs, action, first, t)`: the same vectors gathered straight from a stored
  trajectory (obs [T, n, obs_dim], action [T, n] taken after each obs, first [T]) at time indices
  `t`, without a scan (datasets use it to build minibatches on the fly). Indices before the
  start of the trajectory count as zeros, exactly like the online encoder's zero initial carry.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class HistorySpec:
    """Static description of the encoding (hashable: safe as a jit static argument)."""

    n_agents: int = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    n_actions: int = struct.field(pytree_node=False)  # discrete: #actions; continuous: act dim; 0: none
    history: int = struct.field(pytree_node=False, default=5)  # H, the window length
    discrete: bool = struct.field(pytree_node=False, default=True)
    agent_id: bool = struct.field(pytree_node=False, default=True)

    def __post_init__(self):
        for name in ("n_agents", "obs_dim", "history"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"HistorySpec.{name}={v!r} must be a positive integer")
        if not isinstance(self.n_actions, int) or self.n_actions < 0:
            raise ValueError(f"HistorySpec.n_actions={self.n_actions!r} must be an integer >= 0")

    @property
    def block(self) -> int:
        """Size of one (observation, previous action) block."""
        return self.obs_dim + self.n_actions

    @property
    def dim(self) -> int:
        """Size of τ_i."""
        return (self.n_agents if self.agent_id else 0) + self.history * self.block

    def replace_history(self, history: int) -> HistorySpec:
        return self.replace(history=history)


def action_features(spec: HistorySpec, action) -> jax.Array:
    """action: int[..., n] (discrete) or f32[..., n, act_dim] -> f32[..., n, n_actions]."""
    if spec.n_actions == 0:
        lead = action.shape if spec.discrete else action.shape[:-1]
        return jnp.zeros(lead + (0,), jnp.float32)
    if spec.discrete:
        return jax.nn.one_hot(action, spec.n_actions, dtype=jnp.float32)
    return jnp.asarray(action, jnp.float32)


def _agent_ids(spec: HistorySpec, lead: tuple[int, ...] = ()) -> jax.Array:
    ids = jnp.eye(spec.n_agents, dtype=jnp.float32)
    return jnp.broadcast_to(ids, lead + ids.shape)


# ----------------------------------------------------------------------------- online encoder
def init(spec: HistorySpec) -> jax.Array:
    """The empty window: f32[n_agents, H, block] (blocks most recent first)."""
    return jnp.zeros((spec.n_agents, spec.history, spec.block), jnp.float32)


def push(spec: HistorySpec, carry, obs, prev_action, first) -> jax.Array:
    """Shift the window by one step.

    carry: f32[n, H, block]; obs: f32[n, obs_dim]; prev_action: the action of the previous step
    (int[n] or f32[n, act_dim]); first: bool[] (or bool[n]), `obs` starts an episode."""
    first = jnp.broadcast_to(jnp.asarray(first, bool), (spec.n_agents,))
    act = action_features(spec, prev_action)
    act = jnp.where(first[:, None], 0.0, act)
    new = jnp.concatenate([jnp.asarray(obs, jnp.float32), act], axis=-1)[:, None, :]
    older = jnp.where(first[:, None, None], 0.0, carry[:, :-1])
    return jnp.concatenate([new, older], axis=1)


def encode(spec: HistorySpec, carry) -> jax.Array:
    """carry f32[..., n, H, block] -> τ f32[..., n, dim]."""
    lead = carry.shape[:-3]
    flat = carry.reshape(lead + (spec.n_agents, spec.history * spec.block))
    if not spec.agent_id:
        return flat
    return jnp.concatenate([_agent_ids(spec, lead), flat], axis=-1)


def encode_sequence(spec: HistorySpec, obs, action, first) -> jax.Array:
    """τ for every step of one trajectory with the online encoder (a `lax.scan`).

    obs [T, n, obs_dim], action [T, n(, act_dim)] taken after each obs, first bool[T]
    -> f32[T, n, dim]. Steps before the trajectory count as zeros (as in `windows`), so step 0
    is encoded as an episode start whatever `first[0]` says."""
    first = jnp.asarray(first, bool).at[0].set(True)
    prev0 = jnp.zeros_like(action[0])

    def body(c, x):
        carry, prev = c
        o, a, f = x
        carry = push(spec, carry, o, prev, f)
        return (carry, a), encode(spec, carry)

    _, taus = jax.lax.scan(body, (init(spec), prev0), (obs, action, first))
    return taus


# ----------------------------------------------------------------------------- gather version
def episode_starts(first) -> jax.Array:
    """first bool[T] -> int32[T]: index of the first step of the episode each step belongs to
    (0 when no episode start is recorded before it)."""
    T = first.shape[0]
    idx = jnp.where(first, jnp.arange(T, dtype=jnp.int32), 0)
    return jax.lax.cummax(idx, axis=0)


def windows(spec: HistorySpec, obs, action, first, t, *, env_index=None,
            starts=None) -> jax.Array:
    """τ gathered from stored trajectories at time indices `t` (no scan).

    One trajectory: obs [T, n, obs_dim], action [T, n(, act_dim)], first bool[T], t int[B].
    Several (`env_index` int[B] given): obs [E, T, n, obs_dim], action [E, T, ...], first [E, T],
    and row b is taken from trajectory env_index[b]. `starts` (`episode_starts(first)`, vmapped
    over envs when batched) can be passed to reuse it across calls. -> f32[B, n, dim]."""
    batched = env_index is not None
    if starts is None:
        starts = jax.vmap(episode_starts)(first) if batched else episode_starts(first)
    t = jnp.asarray(t, jnp.int32)
    k = jnp.arange(spec.history, dtype=jnp.int32)
    t_obs = t[:, None] - k[None, :]                          # [B, H]  o^{t-k}
    t_act = t_obs - 1                                        #         a^{t-k-1}
    if batched:
        e = jnp.asarray(env_index, jnp.int32)[:, None]       # [B, 1]
        take = lambda x, ti: x[e, jnp.clip(ti, 0)]
        start = starts[e[:, 0], t][:, None]
    else:
        take = lambda x, ti: x[jnp.clip(ti, 0)]
        start = starts[t][:, None]
    obs_ok = (t_obs >= start) & (t_obs >= 0)
    act_ok = (t_act >= start) & (t_act >= 0)
    o = take(jnp.asarray(obs, jnp.float32), t_obs)          # [B, H, n, obs_dim]
    a = action_features(spec, take(action, t_act))           # [B, H, n, act_feat]
    o = jnp.where(obs_ok[..., None, None], o, 0.0)
    a = jnp.where(act_ok[..., None, None], a, 0.0)
    blocks = jnp.concatenate([o, a], axis=-1)                # [B, H, n, block]
    return encode(spec, jnp.swapaxes(blocks, 1, 2))          # blocks [B, n, H, block]
