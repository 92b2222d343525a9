"""Whole RL agents written in the arrow notation (agents/notation.py, rlscratch/notation/interaction.py):
the interaction lines, the notation TD equal to agents/td.py, the $ policy gradient and the DQN Huber
objective against finite differences and by hand, Add_B/Get_B on the replay buffer, bad programs
refused in one line, exact resume, and every shipped program learning through the trainer."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from conftest import assert_gradients_ok
from rlscratch.envs.factory import make_env

from rlscratch import nn
from rlscratch.agent import EnvSpec, Step, agent_config, resolve_agent
from rlscratch.config import load_config
from rlscratch.notation import NotationError, compile_program, explain
from rlscratch.notation.interaction import PROGRAMS, read_program, split_agent_program
from rlscratch.trainer import train

QUIET = ["log.tensorboard=false", "log.progress=false"]


def run(name: str, tmp_path, overrides: list[str], **kwargs) -> dict:
    config, _ = load_config(name, overrides + QUIET + [f"log.root={tmp_path}"])
    return train(config, tmp_path / name, **kwargs)


def network(program: str, sizes: dict, clip: str | None = None, seed: int = 0):
    """A shipped program's network and losses, compiled in float64 (clip_grad's bound raised when asked,
    so finite differences see the unclipped gradient)."""
    agent = split_agent_program(read_program(program)[1])
    text = agent.network if clip is None else agent.network.replace(clip, ", 1e9)")
    return agent, compile_program(text, np.random.default_rng(seed), sizes=sizes, dtype=np.float64,
                                  tied=agent.targets)


def param_errors(model, xs, targets, prefixes):
    """Relative errors of backward_loss's gradients against central differences of loss(), for the
    parameters whose names start with one of ``prefixes``."""
    model.zero_grad()
    model.forward(*xs)
    model.backward_loss(targets)
    assert model.saved_count() == 0
    wrt = {name: (owner.params[key], owner.grads[key].copy()) for name, owner, key in model.named_params()
           if name.startswith(prefixes)}
    # tiny = 1e-4: the 64 x 64 layers' gradients reach ~0.1, and their entries near 1e-6 carry roundoff of the
    # differences (8e-6 relative at h = 1e-5, falling as h grows): entries below 1e-4 are compared absolutely
    return nn.check_gradients(lambda: model.loss(*xs, targets=targets), wrt, h=1e-5, tiny=1e-4)


# -- the interaction lines --------------------------------------------------------------------------
def test_the_shipped_programs_read_as_agents():
    names = sorted(p.name for p in PROGRAMS.glob("*.arrow"))
    assert names == ["a2c.arrow", "a2c_gae.arrow", "dqn.arrow", "td.arrow", "td_gru.arrow"]
    dqn = split_agent_program(read_program("dqn.arrow")[1])
    assert (dqn.obs, dqn.action, dqn.reward, dqn.done, dqn.discount) == ("O", "a", "r", "d", "g")
    assert dqn.act == "epsilon_greedy" and dqn.acted_on == "q" and dqn.replay
    assert dqn.targets == {"T_1": "Q_1", "T_2": "Q_2", "T_3": "Q_3"} and dqn.constants == {"gamma": 0.99}
    a2c = split_agent_program(read_program("a2c_gae.arrow")[1])
    assert a2c.act == "sample" and a2c.acted_on == "pi" and not a2c.replay
    assert a2c.constants == {"gamma": 0.98, "lam": 0.95}
    # the interaction lines become comments: the network keeps its line numbers
    assert len(a2c.network.splitlines()) == len(read_program("a2c_gae.arrow")[1].splitlines())


@pytest.mark.parametrize("text, message", [
    ("reset() -> O_1\nstep(a_t) -> O_{t+1}, r_t\nsample(pi_t) -> a_t\n",
     r"line 2, column 1: step takes 1 argument\(s\) and gives 3 state\(s\); write: step\(a_t\) -> O_\{t\+1\}, "
     "r_t, d_t"),
    ("reset() -> O_1\nstep(a_t) -> O_{t+1}, r_t, d_t\n", "needs an acting line"),
    ("step(a_t) -> O_{t+1}, r_t, d_t\nsample(pi_t) -> a_t\n", r"needs a 'reset\(\) -> O_1' line"),
    ("reset() -> O_1\nstep(a_t) -> O_{t+1}, r_t, d_t\nsample(pi_t) -> a_t\nAdd_B(O_t, a_t, r_t, d_t, O_{t+1})\n",
     "needs both 'Add_B"),
    ("reset() -> O_1\nreset() -> O_1\n", "line 2, column 1: reset is already written on line 1"),
])
def test_bad_interaction_lines_name_the_fix(text, message):
    with pytest.raises(NotationError, match=message):
        split_agent_program(text)


def test_bad_program_is_refused_in_one_line_with_exit_status_2(tmp_path):
    bad = tmp_path / "bad.arrow"
    bad.write_text("reset() -> O_1\nsample(pi_t) -> a_t\nstep(a_t) -> O_{t+1}, r_t, d_t\n"
                   "O_t --[P|sofmax]-> pi_t\npi_t $ log(pi_t[a_t])\n")
    for program, expected in ((bad, "line 4, column 10: unknown function 'sofmax' -- did you mean 'softmax'?"),
                              (tmp_path / "missing.arrow", "no program file")):
        done = subprocess.run([sys.executable, "-m", "rlscratch.train", "--config", "notation_a2c_gae_cartpole",
                               "--set", f"agent.program={program}", "--run-dir", str(tmp_path / "run")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "agent.program" in lines[0] and expected in lines[0], done.stderr
        assert not (tmp_path / "run").exists()  # nothing written


def test_explain_prints_each_shipped_program_with_its_interaction_lines():
    for path in PROGRAMS.glob("*.arrow"):
        text = explain(path.read_text())
        assert text.startswith("agent (agents/notation.py does these):\n  reset() -> O_1"), path
        assert "backward" in text and "dL/d" in text
    dqn = explain((PROGRAMS / "dqn.arrow").read_text(), sizes={"O": 4, "q": 2})
    assert "T_3: dense  T_3.W (2, 64), T_3.b (2,)" in dqn  # the target network shaped like Q_3
    assert "dL/d(q_t[a_t] - y_t) = dL/dhuber(q_t[a_t] - y_t) * maximum(minimum((q_t[a_t] - y_t), 1), -1)" in dqn


# -- TD: the notation equals agents/td.py -----------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_notation_td_equals_agents_td_on_the_random_walk(tmp_path, seed):
    """The same 19-state walk, the same seed: the notation program's values equal td.py's table to 1e-6
    after 2,000 steps (about 20 episodes), and so does the RMS error both log."""
    steps = ["train.total_steps=2000", f"seed={seed}"]
    core = run("td_random_walk", tmp_path, steps)["agent"]
    notation = run("notation_td_random_walk", tmp_path, steps)["agent"]
    table = core.value.flat_params
    values = notation.model.state_dict()["Value.W"][0]
    assert np.abs(table).max() > 0.1  # it learned something
    np.testing.assert_allclose(values, table, atol=1e-6, rtol=0)
    truth = make_env(load_config("td_random_walk", [])[0].env).unwrapped.true_values
    rms = [float(np.sqrt(np.mean((v - truth) ** 2))) for v in (table, values)]
    assert abs(rms[0] - rms[1]) < 1e-6 and rms[0] < 0.5  # below 0.548, the error of V = 0


# -- the $ policy gradient and the DQN objective --------------------------------------------------------
def rollout(rng, T=5, N=3, obs=3, actions=2):
    return (rng.standard_normal((T + 1, N, obs)), rng.integers(0, actions, (T, N)), rng.standard_normal((T, N)),
            (rng.random((T, N)) < 0.3).astype(np.float64))


def test_a2c_gae_policy_gradient_against_finite_differences_and_by_hand():
    """pi_t $ A_t * log(pi_t[a_t]) with A_t the GAE advantage: the advantage depends on the value network
    only, so the loss is a true function of the policy's parameters -- finite differences apply -- and the
    gradient at the logits is -(one_hot(a_t) - pi_t) A_t / (T N) (rlscratch.policy's policy gradient)."""
    _, model = network("a2c_gae.arrow", {"O": 3, "pi": 2}, clip=", 0.5)")
    rng = np.random.default_rng(3)
    for name, owner, key in model.named_params():  # a 0.01-gain output leaves tiny gradients below it: roundoff
        if name.startswith("P_3"):
            owner.params[key][...] = 0.3 * rng.standard_normal(owner.params[key].shape)
    O, a, r, d = rollout(rng)
    targets = {"a": a, "r": r, "d": d}
    # every policy parameter but P_2.W (64 x 64: a minute of differences); P_1's gradient passes through it
    assert_gradients_ok(param_errors(model, (O,), targets, ("P_1.", "P_2.b", "P_3.")))

    pi, V = model.infer(O)
    v = V[:, :, 0]
    advantages, running = np.zeros((5, 3)), np.zeros(3)
    for t in reversed(range(5)):  # GAE by hand, gamma 0.98, lambda 0.95
        running = r[t] + 0.98 * v[t + 1] * (1 - d[t]) - v[t] + 0.98 * 0.95 * running * (1 - d[t])
        advantages[t] = running
    dlogits = -(np.eye(2)[a] - pi[:5]) * advantages[:, :, None] / (5 * 3)
    model.zero_grad()
    model.forward(O)
    model.backward_loss(targets)
    grads = {name: owner.grads[key] for name, owner, key in model.named_params()}
    np.testing.assert_allclose(grads["P_3.b"], dlogits.sum(axis=(0, 1)), rtol=1e-9, atol=1e-15)
    # the value regression: V_t => A_t + V_t, a mean squared error: dL/dV_t = 2 (V_t - R_t) / (T N) = -2 A_t / (T N)
    np.testing.assert_allclose(grads["V_3.b"], [(-2 * advantages / 15).sum()], rtol=1e-9)


def test_dqn_huber_objective_against_finite_differences_and_by_hand():
    """q_t $ -huber(q_t[a_t] - y_t), y_t = r_t + g_t qbar_{t+1}[argmax(q_{t+1})] (Double DQN: the online net
    picks, the target parameters value, under nograd): the gradient at q_t[a_t] is clip(q - y, -1, 1) / N."""
    _, model = network("dqn.arrow", {"O": 3, "q": 2}, clip=", 10)")
    rng = np.random.default_rng(4)
    for _, owner, key in model.named_params():  # target parameters apart from the online ones
        owner.params[key][...] += 0.5 * rng.standard_normal(owner.params[key].shape)
    O, a, g = rng.standard_normal((2, 16, 3)), rng.integers(0, 2, (1, 16)), np.full((1, 16), 0.99)
    q = model.infer(O)  # q_1, q_2: (2, 16, 2)
    params = model.state_dict()
    h = O[1]
    for k in (1, 2):
        h = np.maximum(h @ params[f"T_{k}.W"].T + params[f"T_{k}.b"], 0)
    qbar = h @ params["T_3.W"].T + params["T_3.b"]
    picks = q[1].argmax(axis=1)
    assert (picks != qbar.argmax(axis=1)).sum() >= 4  # Double DQN differs from max(qbar) on these rows
    bootstrap = 0.99 * qbar[np.arange(16), picks]
    taken = q[0, np.arange(16), a[0]]
    error = 2 * rng.standard_normal(16)  # rewards chosen so that q - y falls on both sides of the Huber kink
    r = (taken - bootstrap - error)[None]
    assert np.abs(error).max() > 1 and np.abs(error).min() < 1
    targets = {"a": a, "r": r, "g": g}
    errors = param_errors(model, (O,), targets, ("Q_1.", "Q_2.b", "Q_3."))  # Q_2.W: as P_2.W above
    assert_gradients_ok(errors)
    assert not any(name.startswith("T_") for name in errors)
    grads = {name: owner.grads[key].copy() for name, owner, key in model.named_params()}
    assert all(not grads[name].any() for name in grads if name.startswith("T_"))  # nograd: the target stays
    expected = np.zeros((16, 2))
    expected[np.arange(16), a[0]] = np.clip(error, -1, 1) / 16
    np.testing.assert_allclose(grads["Q_3.b"], expected.sum(axis=0), rtol=1e-9)


# -- Add_B / Get_B on the replay buffer ---------------------------------------------------------------------
def make_agent(config_name: str, overrides: list[str], obs_dim=3, n_actions=2, num_envs=1):
    config, _ = load_config(config_name, overrides)
    cls = resolve_agent("notation")
    spec = EnvSpec(gym.spaces.Box(-1, 1, (obs_dim,), np.float32), gym.spaces.Discrete(n_actions), num_envs)
    return cls(agent_config(cls, config.agent), spec, config.model, np.random.default_rng(0))


def test_add_b_get_b_round_trip():
    """Add_B stores each transition in the project's ReplayBuffer (n-step folded there); Get_B hands the
    update exactly those transitions, as T = 1 sequences: O = (obs, next_obs), r = G, g = gamma^n or 0."""
    agent = make_agent("notation_dqn_cartpole", ["agent.n_step=1", "agent.learning_starts=1000000"])
    rng = np.random.default_rng(0)
    added = {}
    for i in range(40):
        obs, nxt = rng.standard_normal((1, 3)).astype(np.float32), rng.standard_normal((1, 3)).astype(np.float32)
        terminated = np.array([i % 7 == 6])
        agent.observe(Step(obs, np.array([i % 2]), np.array([float(i)]), nxt, terminated, np.array([False]), {}))
        added[float(i)] = (obs[0], i % 2, nxt[0], 0.0 if terminated[0] else 0.99)
    assert agent.updates == 0 and len(agent.buffer) == 40
    batch = agent.buffer.sample(32, np.random.default_rng(1))
    for o, act, rew, nxt, disc in zip(batch.obs, batch.actions, batch.rewards, batch.next_obs, batch.discounts):
        obs, action, next_obs, discount = added[float(rew)]
        np.testing.assert_array_equal(o, obs)
        np.testing.assert_array_equal(nxt, next_obs)
        assert act == action and disc == pytest.approx(discount)
    # the update reads the batch as the program's data: the loss equals the objective computed by hand
    q = agent.model.infer(np.stack([batch.obs, batch.next_obs]))
    state = agent.model.state_dict()
    h = batch.next_obs
    for k in (1, 2):
        h = np.maximum(h @ state[f"T_{k}.W"].T + state[f"T_{k}.b"], 0)
    picks = q[1].argmax(axis=1)  # Double DQN: the online net picks at next_obs
    y = batch.rewards + batch.discounts * (h @ state["T_3.W"].T + state["T_3.b"])[np.arange(32), picks]
    diff = q[0][np.arange(32), batch.actions] - y
    huber = np.where(np.abs(diff) <= 1, 0.5 * diff ** 2, np.abs(diff) - 0.5)
    loss = agent.step_on(np.stack([batch.obs, batch.next_obs]), {"a": batch.actions[None], "r": batch.rewards[None],
                                                                 "g": batch.discounts[None]})["loss/program"]
    assert loss == pytest.approx(float(huber.mean()), rel=1e-5)


def test_target_network_copies_every_interval():
    agent = make_agent("notation_dqn_cartpole", ["agent.learning_starts=8", "agent.train_freq=8",
                                                 "agent.gradient_steps=3", "agent.target_update_interval=3",
                                                 "agent.batch_size=4"])
    state = agent.model.state_dict()
    assert all(np.array_equal(state[f"T_{k}.W"], state[f"Q_{k}.W"]) for k in (1, 2, 3))  # starts as a copy
    rng = np.random.default_rng(0)
    for i in range(8):
        o = rng.standard_normal((1, 3)).astype(np.float32)
        agent.observe(Step(o, np.array([i % 2]), np.array([1.0]), o, np.array([False]), np.array([False]), {}))
    assert agent.updates == 3  # one round of 3 updates, then the copy
    state = agent.model.state_dict()
    assert all(np.array_equal(state[f"T_{k}.W"], state[f"Q_{k}.W"]) for k in (1, 2, 3))
    agent.step_on(np.stack([rng.standard_normal((4, 3))] * 2), {"a": np.zeros((1, 4), int), "r": np.ones((1, 4)),
                                                                "g": np.ones((1, 4))})
    state = agent.model.state_dict()
    assert not np.array_equal(state["T_3.W"], state["Q_3.W"])  # between copies the target stays behind


# -- through the trainer: resume, load, learning -------------------------------------------------------------
@pytest.mark.parametrize("name, overrides", [
    ("notation_a2c_gae_cartpole", ["train.total_steps=400", "train.eval_every=400", "train.eval_episodes=2"]),
    ("notation_dqn_cartpole", ["train.total_steps=600", "agent.learning_starts=100", "agent.train_freq=50",
                               "agent.gradient_steps=4", "train.eval_every=600", "train.eval_episodes=2"]),
    ("notation_td_gru_random_walk_moves", ["train.total_steps=600", "train.eval_episodes=2"]),
])
def test_resume_is_exact(tmp_path, name, overrides):
    """Stopped mid-rollout (A2C: 296 of 400 steps is not a multiple of 8 x 8; TD-GRU: most likely mid-episode)
    or with a filled replay buffer (DQN), the resumed run ends with exactly the parameters of an uninterrupted
    one."""
    full = run(name, tmp_path / "full", overrides)
    assert run(name, tmp_path / "split", overrides, stop_at=296)["interrupted"]
    resumed = run(name, tmp_path / "split", overrides, resume=True)
    np.testing.assert_array_equal(resumed["agent"].model.flat_params, full["agent"].model.flat_params)


def greedy_return(agent, env_id: str, episodes: int = 5) -> float:
    env, total = gym.make(env_id), 0.0
    for k in range(episodes):
        obs, _ = env.reset(seed=1000 + k)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(int(agent.act(obs[None], explore=False)[0]))
            total += reward
            done = terminated or truncated
    return total / episodes


@pytest.mark.slow
@pytest.mark.parametrize("name, steps, floor", [
    ("notation_a2c_gae_cartpole", 16000, 150.0),
    ("notation_a2c_cartpole", 24000, 100.0),
    ("notation_dqn_cartpole", 8000, 100.0),
])
def test_programs_learn_cartpole_through_the_trainer(tmp_path, name, steps, floor):
    """A random policy balances CartPole for ~22 steps; a few thousand steps of each program do far better."""
    overrides = [f"train.total_steps={steps}", f"train.eval_every={steps}", "train.eval_episodes=5"]
    if "dqn" in name:
        overrides += [f"agent.optim.lr.steps={steps}"]
    result = run(name, tmp_path, overrides)
    assert result["eval_mean"] >= floor, result["eval_mean"]
    from rlscratch import load
    trained = load(tmp_path / name)  # rlscratch.load rebuilds the agent from its checkpoint
    assert greedy_return(trained.agent, "CartPole-v1", 3) >= floor


@pytest.mark.slow
def test_td_gru_program_learns_the_walk_seen_through_its_moves(tmp_path):
    """The 7-state walk seen only as its moves: no memoryless predictor beats an RMS error of ~0.345
    (tests/test_td.py); the GRU program's h_t adds the moves up."""
    agent = run("notation_td_gru_random_walk_moves", tmp_path, ["train.total_steps=12000",
                                                                "agent.optim.lr.steps=12000"])["agent"]
    env = make_env(load_config("notation_td_gru_random_walk_moves", [])[0].env)
    errors = []
    for k in range(200):
        obs, info = env.reset(seed=10**6 + k)
        observations, truth = [obs], [info["true_value"]]
        while True:
            obs, _, terminated, truncated, info = env.step(0)
            if terminated or truncated:
                break
            observations.append(obs)
            truth.append(info["true_value"])
        values = agent.model.infer(np.asarray(observations, dtype=np.float32)[:, None, :], only=["V_t"])
        errors.append(values[:, 0, 0] - np.asarray(truth))
    rms = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    print(f"held-out RMS error {rms:.4f}")
    assert rms < 0.3, rms


def test_huber_and_argmax_layers():
    """huber: x^2/2 inside |x| <= 1, |x| - 1/2 outside, gradient clip(x, -1, 1) (and finite differences away
    from the kink); argmax: each row's index of its largest entry, no gradient."""
    from rlscratch.nn.elementwise import ArgMax, Huber
    x = np.array([[-3.0, -0.5, 0.25, 2.0]])
    np.testing.assert_allclose(Huber().infer(x), [[2.5, 0.125, 0.03125, 1.5]])
    layer = Huber()
    layer.forward(x)
    np.testing.assert_allclose(layer.backward(np.full_like(x, 2.0)), [[-2.0, -1.0, 0.5, 2.0]])
    assert_gradients_ok(nn.check_module(Huber(), np.array([[-2.5, -0.4, 0.3, 1.7]]), rng=np.random.default_rng(0)))
    np.testing.assert_array_equal(ArgMax().infer(np.array([[0.1, 0.7, 0.2], [3.0, -1.0, 2.0]])), [1, 0])
