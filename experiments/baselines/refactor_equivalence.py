"""Refactor check: short runs of every algorithm, written as JSON (every metrics.jsonl row and the
summary's final block), so that a change meant to keep behaviour can be checked bit-identical on
CPU against the commit before it.

    python experiments/baselines/refactor_equivalence.py before.json      # on the old commit
    python experiments/baselines/refactor_equivalence.py after.json       # on the new code
    python experiments/baselines/refactor_equivalence.py --compare before.json after.json
    python experiments/baselines/refactor_equivalence.py out.json mappo qmix   # some cases only

About 6-9 minutes on a 2-core CPU for all 11 cases.
"""
import json
import os
import sys
import tempfile

import jaxdiff

jaxdiff.use_host_devices()  # one XLA host device per core, before JAX starts
from jaxdiff.run import runner

def spec(algo, env, over, steps, env_kwargs=None, seeds=2, chunks=2):
    return runner.RunSpec(algo=algo, env=env, env_kwargs=env_kwargs or {}, algo_overrides=over,
                          seeds=seeds, total_steps=steps, chunks=chunks, eval_episodes=4)

CASES = {
 "mappo": spec("mappo", "mpe_simple_spread", dict(num_envs=4, num_steps=8, update_epochs=2, num_minibatches=2, hidden=16), 4*8*4),
 "mappo_rnn_smax": spec("mappo", "smax_3m", dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2, hidden=16, recurrent=True, value_norm=True), 4*8*2),
 "ippo_cont": spec("ippo", "mpe_simple_spread", dict(num_envs=4, num_steps=8, update_epochs=1, num_minibatches=2, hidden=16), 4*8*4, dict(action_type="continuous")),
 "happo": spec("happo", "mpe_simple_spread", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=2), 4*8*4),
 "happo_cont_agent": spec("happo", "mpe_simple_spread", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=2, critic_state="agent"), 4*8*4, dict(action_type="continuous")),
 "hatrpo": spec("hatrpo", "mpe_simple_spread", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=2), 4*8*4),
 "haa2c": spec("haa2c", "mpe_simple_spread", dict(num_envs=4, num_steps=8, hidden=16, critic_epochs=2), 4*8*4, dict(action_type="continuous")),
 "hasac_cont": spec("hasac", "mpe_simple_spread", dict(num_envs=4, train_interval=25, updates_per_train=4, warmup_steps=200, batch_size=32, buffer_size=1000, hidden=16, auto_alpha=True), 600, dict(action_type="continuous")),
 "hasac_disc": spec("hasac", "mpe_simple_spread", dict(num_envs=4, train_interval=25, updates_per_train=4, warmup_steps=100, batch_size=32, buffer_size=1000, hidden=16), 400),
 "qmix": spec("qmix", "smax_3m", dict(num_envs=2, num_steps=8, buffer_size=8, batch_size=4, hidden=8, mixer_embed=8, hypernet_embed=8, updates_per_iter=2, target_update_interval=2), 2*8*6),
}

def compare(a_path, b_path):
    a, b = json.load(open(a_path)), json.load(open(b_path))
    same = True
    for k in a:
        if k not in b:
            print(k, "missing in", b_path)
            same = False
            continue
        diff = sorted({m for ra, rb in zip(a[k]["rows"], b[k]["rows"]) for m in set(ra) | set(rb)
                       if ra.get(m) != rb.get(m)})
        ok = a[k]["final"] == b[k]["final"] and a[k]["rows"] == b[k]["rows"]
        same &= ok
        print(k, "identical" if ok else f"DIFFERS in {diff or 'final block'}")
    return 0 if same else 1


def main(out):
    only = sys.argv[2:]
    res = {}
    tmp = tempfile.mkdtemp()
    cases = dict(CASES)
    if not only or "state_diffusion" in only:
        from jaxdiff import envs as envs_lib
        from jaxdiff.data import collect as col
        ds = os.path.join(tmp, "ds")
        env = envs_lib.make("mpe_simple_spread")
        col.collect(env, col.random_policy(env), ds, samples=512, test_samples=64, history=2,
                    num_envs=16, chunk_steps=25, progress=False, env_name="mpe_simple_spread")
        cases["state_diffusion"] = spec("state_diffusion", "mpe_simple_spread", dict(dataset=ds, width=32, depth=2, batch_size=64, flow_steps=3, eval_samples=16, lr=3e-3), 64*20)
    for name, s in cases.items():
        if only and name not in only:
            continue
        d = os.path.join(tmp, name)
        summ = runner.train(s, d, progress=False)
        rows = [json.loads(line) for line in open(os.path.join(d, "metrics.jsonl"))]
        res[name] = dict(final=summ["final"], per_seed=summ["per_seed"], rows=rows)
        print(name, json.dumps(summ["final"])[:200], flush=True)
    json.dump(res, open(out, "w"), indent=1, sort_keys=True)

if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    main(sys.argv[1])
