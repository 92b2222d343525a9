"""The batched search on a conv model (benchmarks/conv_search_model.py, the ``--model conv`` case
of ``python -m rlscratch.bench mcts``): image-shaped hidden states go through the search's arrays,
each root's tree is the one it gets searched alone, and the benchmark's conv case runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rlscratch.muzero.mcts import MCTS, SearchConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_mcts  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)
from conv_search_model import ConvSearchModel  # noqa: E402


@pytest.mark.parametrize("gumbel", [False, True])
def test_batched_search_on_conv_states_equals_each_root_alone(gumbel):
    model = ConvSearchModel(np.random.default_rng(3), n_actions=4, in_channels=2, size=5, channels=4, head_channels=2)
    obs = np.random.default_rng(4).uniform(0, 1, (3, model.obs_dim))
    config = SearchConfig(num_simulations=8, gumbel=gumbel)
    batched = MCTS(config, 4)
    together = batched.run(model, obs, np.random.default_rng(0), explore=False)
    assert batched.states.shape[2:] == (4, 5, 5)
    # the new nodes' states are the model's own: node 1 of each tree came from its root by its first action
    action = batched.in_edge[:, 1] % 4
    expected, *_ = model.recurrent_inference(batched.states[:, 0], action)
    assert np.allclose(batched.states[:, 1], expected, atol=1e-6)
    for i in range(3):
        alone = MCTS(config, 4).run(model, obs[i:i + 1], np.random.default_rng(0), explore=False)
        assert alone.visit_counts[0].tolist() == together.visit_counts[i].tolist()
        assert alone.root_value[0] == pytest.approx(together.root_value[i], abs=1e-5)


def test_bench_mcts_conv_case_runs(capsys):
    assert bench_mcts.main(["--model", "conv", "--roots", "2", "--simulations", "4", "--search", "puct",
                            "--rounds", "1", "--block", "0.01", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["network"] == "random conv"
    (result,) = report["results"]
    assert result["roots"] == 2 and result["sims_per_s"] > 0 and result["target_sims_per_s"] is None
