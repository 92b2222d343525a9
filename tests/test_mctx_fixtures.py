"""The project's search against DeepMind's mctx: fixtures written by benchmarks/mctx_fixtures.py
(in its own venv with jax + mctx) from ``mctx.muzero_policy`` and ``mctx.gumbel_muzero_policy`` on a
small deterministic table, searched here by rlscratch.muzero.mcts on the same table with the same
root noise. With mctx's conventions set (``mctx_config``) the whole tree must come out the same:
every node's visit count, value, parent and action, the root's visit counts, action weights, value,
Q-values and (Gumbel) chosen action. The one-root fast path (rlscratch.muzero.fast) is checked root
by root on the pUCT fixtures.

mctx's conventions, where the project's defaults differ (rlscratch/muzero/mcts.py, "Conventions"):
pUCT normalises Q per node over the node's value and its visited children's Qs (not tree-wide),
scores an unvisited child's Q as 0 (not the parent's mean), and floors the range at 1e-8 (not 0.01).
Gumbel MuZero's defaults are mctx's already.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from rlscratch.muzero.mcts import MCTS, SearchConfig

FIXTURES = sorted((pathlib.Path(__file__).parent / "fixtures" / "mctx").glob("*.json"))


def load(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


class StateTableModel:
    """The fixtures' model: the hidden state is a state id s; action a leads to next_state[s, a]
    with reward[s, a]; every state has its prior logits and value."""

    def __init__(self, table: dict) -> None:
        self.next_state = np.array(table["next_state"], dtype=np.int64)
        self.reward = np.array(table["reward"])
        self.logits = np.array(table["prior_logits"])
        self.value = np.array(table["value"])

    def initial_inference(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.asarray(states, dtype=np.int64)
        return s[:, None], self.logits[s], self.value[s]

    def recurrent_inference(self, state: np.ndarray, actions: np.ndarray,
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        s = state[:, 0]
        nxt = self.next_state[s, actions]
        return nxt[:, None], self.reward[s, actions], self.logits[nxt], self.value[nxt]


def mctx_config(fixture: dict, **overrides) -> SearchConfig:
    """The project's search with mctx's conventions for this fixture's policy."""
    discounts = np.array(fixture["table"]["discount"])
    assert np.all(discounts == fixture["discount"])   # the project's search takes one discount
    p = fixture["params"]
    if fixture["policy"] == "muzero_policy":
        config = dict(num_simulations=fixture["num_simulations"], discount=fixture["discount"],
                      pb_c_init=p["pb_c_init"], pb_c_base=p["pb_c_base"],
                      exploration_fraction=p["dirichlet_fraction"], dirichlet_alpha=p["dirichlet_alpha"],
                      q_normalization="node", unvisited_q="lowest", value_delta=1e-8)
    else:
        config = dict(num_simulations=fixture["num_simulations"], discount=fixture["discount"], gumbel=True,
                      max_considered_actions=p["max_num_considered_actions"], gumbel_scale=p["gumbel_scale"],
                      value_scale=p["value_scale"], maxvisit_init=p["maxvisit_init"])
    config.update(overrides)
    return SearchConfig(**config)


def search(fixture: dict, config: SearchConfig, rows: slice = slice(None)) -> tuple[MCTS, object]:
    model = StateTableModel(fixture["table"])
    mcts = MCTS(config, fixture["num_actions"])
    roots = np.array(fixture["root_states"])[rows]
    noise = np.array(fixture["noise"])[rows]
    return mcts, mcts.run(model, roots, np.random.default_rng(0), explore=False, noise=noise)


def tree_of(mcts: MCTS, simulations: int) -> dict[str, np.ndarray]:
    """The project's tree in mctx's terms: per node, visits, mean value, parent and action (-1 at
    the root); node i is the one simulation i - 1 made, in both."""
    n, A = simulations + 1, mcts.n_actions
    edge = mcts.in_edge[:, :n]
    parents = edge // A - mcts.root_index[:, None]
    actions = edge % A
    parents[:, 0] = actions[:, 0] = -1
    return {"node_visits": mcts.visits[:, :n], "node_values": mcts.value_sum[:, :n] / mcts.visits[:, :n],
            "parents": parents, "action_from_parent": actions}


def differences(fixture: dict, mcts: MCTS, result, rows: slice = slice(None)) -> dict[str, float]:
    """Largest |ours - mctx's| per quantity (0 everywhere = the same search)."""
    expected = {k: np.array(v)[rows] for k, v in fixture["expected"].items()}
    ours = tree_of(mcts, fixture["num_simulations"])
    visited = expected["visit_counts"] > 0
    out = {
        "visit_counts": np.abs(result.visit_counts - expected["visit_counts"]).max(),
        "action_weights": np.abs(result.policy - expected["action_weights"]).max(),
        "root_value": np.abs(result.root_value - expected["root_value"]).max(),
        "root_qvalues": np.abs(np.where(visited, result.q_values - expected["root_qvalues"], 0.0)).max(),
    }
    for key in ("node_visits", "node_values", "parents", "action_from_parent"):
        out[key] = np.abs(ours[key] - expected[key]).max()
    if fixture["policy"] == "gumbel_muzero_policy":
        out["action"] = np.abs(result.action - expected["action"]).max()
    return {k: float(v) for k, v in out.items()}


def test_the_fixtures_are_there_and_cover_the_brief():
    """>= 3 actions, depth >= 2, batch >= 2, several simulation counts, Q spreads below 1, both policies."""
    fixtures = [load(p) for p in FIXTURES]
    assert {f["policy"] for f in fixtures} == {"muzero_policy", "gumbel_muzero_policy"}
    for policy in ("muzero_policy", "gumbel_muzero_policy"):
        assert len({f["num_simulations"] for f in fixtures if f["policy"] == policy}) >= 3
    for f in fixtures:
        assert f["num_actions"] >= 3 and f["batch"] >= 2 and f["max_depth"] >= 2, f["name"]
        t = f["table"]
        q = np.array(t["reward"]) + f["discount"] * np.array(t["value"])[np.array(t["next_state"])]
        assert q.max() - q.min() < 1.0, f["name"]


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_batched_search_equals_mctx(path):
    fixture = load(path)
    mcts, result = search(fixture, mctx_config(fixture))
    diff = differences(fixture, mcts, result)
    exact = ("visit_counts", "node_visits", "parents", "action_from_parent", "action")
    assert {k: v for k, v in diff.items() if k in exact} == {k: 0.0 for k in exact if k in diff}
    assert max(diff.values()) < 1e-12, diff


@pytest.mark.parametrize("path", [p for p in FIXTURES if load(p)["policy"] == "muzero_policy"],
                         ids=lambda p: p.stem)
def test_one_root_fast_path_equals_mctx(path):
    """Each root alone: a one-root pUCT search runs on Python lists (rlscratch.muzero.fast)."""
    fixture = load(path)
    for b in range(fixture["batch"]):
        mcts, result = search(fixture, mctx_config(fixture), rows=slice(b, b + 1))
        diff = differences(fixture, mcts, result, rows=slice(b, b + 1))
        assert max(diff.values()) < 1e-12, (b, diff)


@pytest.mark.parametrize("convention", [{"q_normalization": "tree"}, {"unvisited_q": "parent_mean"},
                                        {"pb_c_init": 1.25, "pb_c_base": 19652.0}],
                         ids=["tree_normalization", "unvisited_parent_mean", "default_pb_c"])
def test_each_mctx_convention_is_needed(convention):
    """Setting any one pUCT convention back to the project's default (or the fixture's pUCT
    constants to the usual ones) changes some fixture's visit counts: the options are what makes the
    searches agree, and the fixtures notice each."""
    changed = []
    for path in FIXTURES:
        fixture = load(path)
        if fixture["policy"] != "muzero_policy":
            continue
        _, result = search(fixture, mctx_config(fixture, **convention))
        if not np.array_equal(result.visit_counts, fixture["expected"]["visit_counts"]):
            changed.append(fixture["name"])
    assert changed


if __name__ == "__main__":   # the comparison table: PYTHONPATH=. python tests/test_mctx_fixtures.py
    print(f"{'fixture':24} {'sims':>4} {'batch':>5} {'depth':>5} {'max|visit diff|':>15} {'max|weight diff|':>16}"
          f" {'max|node value diff|':>20}  visits differ with the project's defaults")
    for path in FIXTURES:
        fixture = load(path)
        mcts, result = search(fixture, mctx_config(fixture))
        diff = differences(fixture, mcts, result)
        flips = []
        if fixture["policy"] == "muzero_policy":
            for name, change in [("tree", {"q_normalization": "tree"}), ("parent_mean", {"unvisited_q": "parent_mean"}),
                                 ("delta=0.01", {"value_delta": 0.01}),
                                 ("all three", {"q_normalization": "tree", "unvisited_q": "parent_mean",
                                                "value_delta": 0.01})]:
                _, other = search(fixture, mctx_config(fixture, **change))
                if not np.array_equal(other.visit_counts, fixture["expected"]["visit_counts"]):
                    flips.append(name)
        else:
            _, other = search(fixture, mctx_config(fixture, q_normalization="tree"))
            if not np.array_equal(other.visit_counts, fixture["expected"]["visit_counts"]):
                flips.append("tree (EZ V2)")
        print(f"{fixture['name']:24} {fixture['num_simulations']:4d} {fixture['batch']:5d} {fixture['max_depth']:5d}"
              f" {diff['visit_counts']:15.3g} {diff['action_weights']:16.3g} {diff['node_values']:20.3g}  "
              f"{', '.join(flips) or '-'}")
