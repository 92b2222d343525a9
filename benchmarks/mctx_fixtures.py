"""Fixtures from DeepMind's mctx for tests/test_mctx_fixtures.py: the same table-driven model
searched by ``mctx.muzero_policy`` (pUCT) and ``mctx.gumbel_muzero_policy`` (Gumbel MuZero).

This script runs in its OWN virtual environment -- jax and mctx are never dependencies of rlscratch,
whose tests only read the JSON this writes:

    python3 -m venv /work/jaxvenv && /work/jaxvenv/bin/pip install jax jaxlib mctx numpy
    /work/jaxvenv/bin/python benchmarks/mctx_fixtures.py            # writes tests/fixtures/mctx/*.json

(The committed fixtures were made with jax 0.10.2, jaxlib 0.10.2, mctx 0.0.71, numpy 2.4.6, CPU;
each file records the versions that made it.)

The model is a small deterministic table, so both searches see exactly the same numbers:
an embedding is a state id s in 0..n_states-1, and action a leads to ``next_state[s, a]`` with
reward ``reward[s, a]`` and discount ``discount[s, a]``; the new node's prior logits and value are
``prior_logits[next]`` and ``value[next]``. Roots are state ids too. States repeat, so the tree can
grow as deep as the simulations take it. Rewards lie in [-0.2, 0.2] and values in [-0.3, 0.3], so
the Q-values differ by less than 1 -- where the conventions of normalising them matter.

Everything is float64 (``jax_enable_x64``). The exploration noise is drawn here exactly as mctx
draws it inside the policy (the same key splits), stored in the fixture, and checked against the
tree mctx returns, so the project's search can be handed the same noise:

* pUCT: ``rng, dirichlet_rng, search_rng = split(key, 3)``, noise = ``dirichlet(dirichlet_rng,
  full(A, alpha), (B,))``, mixed into the root prior with ``dirichlet_fraction``;
* Gumbel: ``rng, gumbel_rng = split(key)``, g = ``gumbel_scale * gumbel(gumbel_rng, (B, A))``.

mctx's pUCT adds a random 1e-7 * U(0, 1) to every score to break ties. Each pUCT fixture is searched
a second time with another key (the noisy prior given directly, no further noise); the script
refuses a table whose visit counts depend on that tie-breaking, so the fixtures test the maths and
not the tie-breaking.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import jaxlib
import mctx
import numpy as np

jax.config.update("jax_enable_x64", True)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mctx"


def make_table(n_states: int, n_actions: int, discount: float, seed: int) -> dict[str, np.ndarray]:
    g = np.random.default_rng(seed)
    return {
        "next_state": g.integers(0, n_states, size=(n_states, n_actions)),
        "reward": g.uniform(-0.2, 0.2, size=(n_states, n_actions)),
        "discount": np.full((n_states, n_actions), discount),
        "prior_logits": g.normal(0.0, 1.0, size=(n_states, n_actions)),
        "value": g.uniform(-0.3, 0.3, size=n_states),
    }


def model_fns(table: dict[str, np.ndarray]):
    t = {k: jnp.asarray(v) for k, v in table.items()}

    def root_fn(states: np.ndarray) -> mctx.RootFnOutput:
        s = jnp.asarray(states, dtype=jnp.int32)
        return mctx.RootFnOutput(prior_logits=t["prior_logits"][s], value=t["value"][s], embedding=s)

    def recurrent_fn(params, rng_key, action, embedding):
        del params, rng_key
        nxt = t["next_state"][embedding, action].astype(jnp.int32)
        out = mctx.RecurrentFnOutput(reward=t["reward"][embedding, action], discount=t["discount"][embedding, action],
                                     prior_logits=t["prior_logits"][nxt], value=t["value"][nxt])
        return out, nxt

    return root_fn, recurrent_fn


def tree_record(tree) -> dict:
    """The parts of the tree the tests compare: per node (index i = made by simulation i - 1)."""
    qvalues = jax.vmap(lambda tr: tr.qvalues(tr.ROOT_INDEX))(tree)
    summary = tree.summary()
    return {
        "visit_counts": np.asarray(summary.visit_counts).tolist(),
        "root_value": np.asarray(tree.node_values[:, 0]).tolist(),
        "root_qvalues": np.asarray(qvalues).tolist(),
        "node_visits": np.asarray(tree.node_visits).tolist(),
        "node_values": np.asarray(tree.node_values).tolist(),
        "parents": np.asarray(tree.parents).tolist(),
        "action_from_parent": np.asarray(tree.action_from_parent).tolist(),
    }


def max_depth(parents: np.ndarray) -> int:
    deepest = 0
    for row in parents:
        for node in range(len(row)):
            depth, i = 0, node
            while row[i] >= 0:
                i, depth = row[i], depth + 1
            deepest = max(deepest, depth)
    return deepest


def puct_fixture(table, roots, sims: int, key: int, fraction: float, alpha: float = 0.3, pb_c_init: float = 1.25,
                 pb_c_base: float = 19652.0) -> dict:
    root_fn, recurrent_fn = model_fns(table)
    root = root_fn(roots)
    B, A = root.prior_logits.shape
    rng_key = jax.random.PRNGKey(key)
    # the Dirichlet noise exactly as muzero_policy draws it
    _, dirichlet_rng, _ = jax.random.split(rng_key, 3)
    noise = jax.random.dirichlet(dirichlet_rng, alpha=jnp.full([A], alpha), shape=(B,))
    out = mctx.muzero_policy(None, rng_key, root, recurrent_fn, sims, dirichlet_fraction=fraction,
                             dirichlet_alpha=alpha, pb_c_init=pb_c_init, pb_c_base=pb_c_base)
    noisy = (1 - fraction) * jax.nn.softmax(root.prior_logits) + fraction * noise
    used = jax.nn.softmax(out.search_tree.children_prior_logits[:, 0])
    assert np.allclose(np.asarray(used), np.asarray(noisy), atol=1e-12), "Dirichlet noise differs from mctx's"
    # the same search with another tie-breaking key: the noisy prior given, no further noise
    again = mctx.muzero_policy(None, jax.random.PRNGKey(key + 1000),
                               root.replace(prior_logits=jnp.log(noisy)), recurrent_fn, sims,
                               dirichlet_fraction=0.0, dirichlet_alpha=alpha, pb_c_init=pb_c_init,
                               pb_c_base=pb_c_base)
    tie_free = bool(np.array_equal(np.asarray(again.search_tree.node_visits), np.asarray(out.search_tree.node_visits))
                    and np.array_equal(np.asarray(again.search_tree.parents), np.asarray(out.search_tree.parents)))
    record = tree_record(out.search_tree)
    record["action_weights"] = np.asarray(out.action_weights).tolist()
    record["action"] = np.asarray(out.action).tolist()   # sampled from the visits with mctx's key: not compared
    return {"policy": "muzero_policy", "params": {"pb_c_init": pb_c_init, "pb_c_base": pb_c_base,
                                                 "dirichlet_fraction": fraction, "dirichlet_alpha": alpha},
            "noise": np.asarray(noise).tolist(), "expected": record, "tie_free": tie_free}


def gumbel_fixture(table, roots, sims: int, key: int, considered: int, scale: float = 1.0) -> dict:
    root_fn, recurrent_fn = model_fns(table)
    root = root_fn(roots)
    rng_key = jax.random.PRNGKey(key)
    # the Gumbel noise exactly as gumbel_muzero_policy draws it
    _, gumbel_rng = jax.random.split(rng_key)
    gumbel = scale * jax.random.gumbel(gumbel_rng, shape=root.prior_logits.shape, dtype=root.prior_logits.dtype)
    out = mctx.gumbel_muzero_policy(None, rng_key, root, recurrent_fn, sims, max_num_considered_actions=considered,
                                    gumbel_scale=scale)
    assert np.array_equal(np.asarray(out.search_tree.extra_data.root_gumbel), np.asarray(gumbel)), \
        "Gumbel noise differs from mctx's"
    record = tree_record(out.search_tree)
    record["action_weights"] = np.asarray(out.action_weights).tolist()
    record["action"] = np.asarray(out.action).tolist()
    return {"policy": "gumbel_muzero_policy",
            "params": {"max_num_considered_actions": considered, "gumbel_scale": scale,
                       "value_scale": 0.1, "maxvisit_init": 50.0},
            "noise": np.asarray(gumbel).tolist(), "expected": record, "tie_free": True}


CASES = [
    # name, policy, n_actions, batch, simulations, extra
    ("puct_a4_s8", "puct", 4, 3, 8, {"fraction": 0.25}),
    ("puct_a4_s16", "puct", 4, 3, 16, {"fraction": 0.25}),
    ("puct_a4_s32", "puct", 4, 3, 32, {"fraction": 0.25}),
    ("puct_a3_s24_nonoise", "puct", 3, 2, 24, {"fraction": 0.0}),
    ("gumbel_a5_m4_s8", "gumbel", 5, 3, 8, {"considered": 4}),
    ("gumbel_a5_m4_s16", "gumbel", 5, 3, 16, {"considered": 4}),
    ("gumbel_a5_m4_s32", "gumbel", 5, 3, 32, {"considered": 4}),
    ("gumbel_a3_m16_s20", "gumbel", 3, 2, 20, {"considered": 16}),
    # other pUCT constants: a larger c1 and a small c2, whose log term then grows with the visits
    ("puct_a4_s16_c2_10", "puct", 4, 3, 16, {"fraction": 0.25, "pb_c_init": 2.0, "pb_c_base": 10.0}),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=OUT)
    parser.add_argument("--only", help="comma list of fixture names to (re)write (default: all)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_states, discount = 7, 0.9
    only = set(args.only.split(",")) if args.only else {case[0] for case in CASES}
    for index, (name, kind, A, B, sims, extra) in enumerate(CASES):
        if name not in only:
            continue
        # the first table seed whose pUCT result does not depend on mctx's random tie-breaking
        for seed in range(100 * index, 100 * index + 100):
            table = make_table(n_states, A, discount, seed)
            roots = np.random.default_rng(seed).choice(n_states, size=B, replace=False)
            if kind == "puct":
                fixture = puct_fixture(table, roots, sims, key=seed, **extra)
            else:
                fixture = gumbel_fixture(table, roots, sims, key=seed, considered=extra["considered"])
            depth = max_depth(np.asarray(fixture["expected"]["parents"]))
            if fixture["tie_free"] and depth >= 2:
                break
        else:
            print(f"{name}: no table in 100 seeds is free of ties", file=sys.stderr)
            return 1
        fixture.update({
            "name": name, "num_actions": A, "batch": B, "num_simulations": sims, "discount": discount,
            "table_seed": seed, "max_depth": depth,
            "table": {k: v.tolist() for k, v in table.items()}, "root_states": roots.tolist(),
            "made_by": {"command": "/work/jaxvenv/bin/python benchmarks/mctx_fixtures.py",
                        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "mctx": mctx.__version__,
                        "numpy": np.__version__, "x64": True},
        })
        del fixture["tie_free"]
        path = args.out / f"{name}.json"
        path.write_text(json.dumps(fixture, indent=1) + "\n")
        visits = fixture["expected"]["visit_counts"]
        print(f"{name}: seed {seed}, depth {depth}, root visits {visits} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
