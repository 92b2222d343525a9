"""MuZero (Schrittwieser et al. 2020), Gumbel MuZero (Danihelka et al. 2022) and EfficientZero (Ye et al. 2021).

The model, the search and the loss live in rlscratch.muzero; this file is the agent around them:

    act(obs):     one batched search for all parallel envs (rlscratch.muzero.mcts), from the learned
                  model's hidden states; in training the root gets Dirichlet noise (MuZero) or Gumbel
                  noise (Gumbel MuZero), and the action is drawn from the visit counts with a
                  temperature (MuZero) or is the search's own choice (Gumbel); evaluation plays
                  greedily without noise.
    observe(step): store every env's step -- observation, action, reward, the search's root value and
                  policy -- as one row of that env's game segment (rlscratch.muzero.replay), plus a row
                  holding the final observation when its episode ended. Then train: ``train_ratio``
                  gradient updates per env step once ``warmup_steps`` have been collected.
    an update:    sample B positions (prioritized by |v_0 - z_0|, with importance weights); optionally
                  *reanalyze* a random fraction of them -- re-run the search with the latest model at
                  the rows their targets read and overwrite the stored values and policies, so old
                  games get fresh targets;
                  build K-step targets (n-step values bootstrapped from the stored search values, or
                  from a target network); unroll the model K steps and take an optimizer step on the
                  loss of rlscratch.muzero.loss; refresh the priorities.

EfficientZero (Ye et al. 2021) is this agent with switches on (agent name ``efficientzero`` turns
them all on): ``consistency_coef`` adds the temporal-consistency loss (rlscratch.muzero.consistency),
``value_prefix`` predicts reward sums with an LSTM (rlscratch.muzero.value_prefix), ``offpolicy_age_unit``
shortens the value horizon of old samples (``td_steps`` below), ``reanalyze_network``/``reanalyze_noise``
re-search with the target network and root noise, and ``network: conv`` plays on images
(rlscratch.muzero.conv_model; ``block_norm`` puts a layer or batch norm in its residual blocks,
``augmentation`` shifts and rescales the training batch's observations, rlscratch.muzero.augment).
With every switch off the agent is MuZero, draw for draw.

Everything the run needs to resume exactly (network, optimizer, target network, replay with its
priorities, counters, the random generator) is in ``components()``/``counters``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import Agent, EnvSpec, Step
from rlscratch.config import ModelConfig, bounded
from rlscratch.errors import ConfigError
from rlscratch.muzero.augment import Augmentation, check_augmentation
from rlscratch.muzero.conv_model import ConvMuZeroNet
from rlscratch.muzero.loss import unrolled_loss
from rlscratch.muzero.mcts import MCTS, SearchConfig, SearchResult, select_action
from rlscratch.muzero.model import MuZeroNet
from rlscratch.muzero.replay import GameReplay, Window, rows_read
from rlscratch.muzero.targets import make_targets
from rlscratch.optim_config import OptimConfig, finish_config, make_optimizer, optim_field


@dataclass
class MuZeroConfig:
    # search
    num_simulations: int = bounded(50, ge=1)
    gumbel: bool = bounded(False, help="Gumbel MuZero's root search (sequential halving) instead of pUCT")
    max_considered_actions: int = bounded(16, ge=1, help="Gumbel: actions sampled at the root")
    gumbel_scale: float = bounded(1.0, ge=0)
    value_scale: float = bounded(0.1, gt=0, help="Gumbel: c_scale of sigma(q_hat) = (c_visit + max N) c_scale q_hat; "
                                                 "smaller: softer improved policies")
    maxvisit_init: float = bounded(50.0, ge=0, help="Gumbel: c_visit of sigma(q_hat)")
    discount: float = bounded(0.997, gt=0, le=1)
    pb_c_init: float = bounded(1.25, gt=0)
    pb_c_base: float = bounded(19652.0, gt=0)
    dirichlet_alpha: float = bounded(0.25, gt=0)
    exploration_fraction: float = bounded(0.25, ge=0, le=1)
    q_normalization: str = bounded("auto", choices=("auto", "tree", "node"),
                                   help="Q to [0, 1] by tree-wide min-max or per node (auto: pUCT tree, Gumbel node)")
    tree_bounds: str = bounded("q", choices=("q", "returns"),
                               help="what tree-wide bounds take: mean Qs (EZ V1) or sampled returns (EZ V2)")
    unvisited_q: str = bounded("parent_mean", choices=("parent_mean", "lowest"), help="pUCT: an unvisited child's Q")
    act_epsilon: float = bounded(0.0, ge=0, le=1, help="training play: this share of actions is uniformly random "
                                                       "instead of the search's (0: off)")
    temperature_schedule: list = bounded(default_factory=lambda: [[0, 1.0], [15000, 0.5], [25000, 0.25]],
                                         help="[[env_step, T], ...]: visit-count temperature from that step on")
    # model
    network: str = bounded("mlp", choices=("mlp", "conv"),
                           help="mlp: MLPs from model.hidden; conv: EfficientZero's conv nets on image observations")
    conv_channels: int = bounded(32, ge=1, help="conv: channels of the hidden state")
    conv_blocks: int = bounded(1, ge=1, help="conv: residual blocks in the representation and the dynamics")
    reduced_channels: int = bounded(8, ge=1, help="conv: channels of the heads' 1x1 convolutions")
    head_hidden: int = bounded(32, ge=1, help="conv: hidden width of the heads")
    block_norm: str = bounded("none", choices=("none", "layer", "batch"),
                              help="conv: normalisation after each 3x3 conv (residual blocks, stems): layer = per "
                                   "sample over (C, H, W); batch = BatchNorm, batch statistics in training and "
                                   "running ones in the search (EfficientZero)")
    state_dim: int = bounded(32, ge=1)
    value_support: int = bounded(20, ge=1, help="values on the support -S..S after h(x)")
    reward_support: int = bounded(5, ge=1)
    # training
    unroll_steps: int = bounded(5, ge=1, help="K")
    td_steps: int = bounded(10, ge=1, help="n of the n-step value targets")
    batch_size: int = bounded(128, ge=1)
    optim: OptimConfig = optim_field(name="adam", lr=3e-3, weight_decay=1e-4, max_grad_norm=5.0, momentum=0.9)
    value_coef: float = bounded(0.25, ge=0)
    entropy_coef: float = bounded(0.0, ge=0, help="policy-entropy bonus: the loss subtracts this times H(p_k) "
                                                  "(rlscratch.muzero.loss; 0: off)")
    state_grad_scale: float = bounded(0.5, ge=0, le=1, help="gradient into the dynamics' state input, per step")
    replay_capacity: int = bounded(100_000, ge=2, help="rows held, over all envs")
    warmup_steps: int = bounded(1000, ge=0, help="env steps before the first update")
    train_ratio: float = bounded(0.5, gt=0, help="gradient updates per env step")
    value_target: str = bounded("search", choices=("search", "target"),
                                help="bootstrap n-step targets from stored search values or a target network")
    target_update_interval: int = bounded(200, ge=1, help="updates between target-network copies")
    reanalyze_fraction: float = bounded(0.0, ge=0, le=1, help="share of each batch whose targets are re-searched")
    prioritized: bool = True
    priority_alpha: float = bounded(1.0, ge=0)
    priority_beta: float = bounded(0.4, ge=0, le=1, help="annealed to 1 over priority_beta_steps")
    priority_beta_steps: int = bounded(25_000, ge=1, help="env steps")
    priority_eps: float = bounded(1e-6, gt=0)
    # EfficientZero (Ye et al. 2021): each part a switch, all off by default -- these settings are MuZero
    consistency_coef: float = bounded(0.0, ge=0, help="temporal-consistency loss weight (0: off; EfficientZero: 2)")
    consistency_hidden: int = bounded(64, ge=1, help="projector/predictor hidden width")
    consistency_dim: int = bounded(64, ge=1, help="projection size")
    value_prefix: bool = bounded(False, help="an LSTM predicts the sum of rewards since its last reset")
    lstm_hidden: int = bounded(32, ge=1)
    lstm_horizon: int = bounded(5, ge=1, help="value prefix: the LSTM restarts every this many unroll/search steps")
    offpolicy_age_unit: int = bounded(0, ge=0, help="off-policy correction: n shrinks by one per this many env "
                                                     "steps of a sample's age, down to 1 (0: off)")
    reanalyze_network: str = bounded("online", choices=("online", "target"),
                                     help="the network a reanalysis searches with (EfficientZero: target)")
    reanalyze_noise: bool = bounded(False, help="root exploration noise in reanalysis searches (EfficientZero: on)")
    search_value_age: int = bounded(0, ge=0, help="EfficientZero V2's mixed value target: samples at least this "
                                                  "many env steps old train towards their stored (reanalysed) "
                                                  "search values instead of n-step returns (0: off)")
    augmentation: list = bounded(default_factory=list,
                                 help="conv: augment the training batch's observations, [shift, intensity] as "
                                      "EfficientZero (rlscratch.muzero.augment); [] off")

    def __post_init__(self) -> None:
        finish_config(self)  # the optim: section's defaults above; every schedule states its length


class MuZero(Agent):
    Config = MuZeroConfig
    counters = ("updates", "env_steps", "train_credit")

    def __init__(self, config: MuZeroConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        if model.notation is not None:
            raise ConfigError("model.notation: MuZero builds its three networks (representation, dynamics, "
                              "prediction) from model.hidden; a notation program cannot replace them -- remove it")
        self.n_actions = spec.n_actions
        self.schedule = self._temperature_schedule(config.temperature_schedule)
        augmentation = check_augmentation(config.augmentation, config.network)
        self.net = self._network(config, spec, model, rng)
        # EfficientZero's shift/intensity augmentation of training observations (None: off, no draws)
        self.augment = Augmentation(augmentation, spec.obs_shape, self.net.dtype) if augmentation else None
        uses_target = config.value_target == "target" or config.reanalyze_network == "target"
        self.target = self.net.clone() if uses_target else None
        self.optimizer = make_optimizer(config.optim, self.net, lambda: self.env_steps)
        self.search_config = SearchConfig(
            num_simulations=config.num_simulations, discount=config.discount, pb_c_init=config.pb_c_init,
            pb_c_base=config.pb_c_base, dirichlet_alpha=config.dirichlet_alpha,
            exploration_fraction=config.exploration_fraction, gumbel=config.gumbel,
            max_considered_actions=config.max_considered_actions, gumbel_scale=config.gumbel_scale,
            value_scale=config.value_scale, maxvisit_init=config.maxvisit_init,
            q_normalization=config.q_normalization, tree_bounds=config.tree_bounds, unvisited_q=config.unvisited_q)
        # preallocated trees: one search for the training envs, one for evaluation's, one for reanalysis
        # (which reallocates whenever its batch size changes)
        self._searches: dict[int, MCTS] = {}
        self._reanalyze_search = MCTS(self.search_config, self.n_actions)
        # (0/1 boards are stored as bools: a quarter of the memory)
        obs_dtype = np.bool_ if getattr(spec.observation_space, "dtype", None) == np.bool_ else np.float32
        self.replay = GameReplay(config.replay_capacity, spec.num_envs, (spec.obs_dim,), spec.n_actions,
                                 obs_dtype=obs_dtype, alpha=config.priority_alpha if config.prioritized else 0.0,
                                 eps=config.priority_eps)
        self.window = config.unroll_steps + config.td_steps + 1
        self.env_steps = 0
        self.train_credit = 0.0
        self._last_search: SearchResult | None = None
        # evaluation's searches break ties with their own generator, so evaluating (how often, with
        # how many envs) never changes what training does
        self.eval_rng = np.random.default_rng(rng.integers(2**63))
        # CPU seconds by part since the last observe() (reported per env step as cpu/*_ms: the
        # cost split of a run; measurement only, nothing here changes what the agent computes)
        self._cpu = {"search": 0.0, "reanalyze": 0.0, "train": 0.0, "env": 0.0}
        self._acted_at: float | None = None

    @staticmethod
    def _network(config: MuZeroConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator,
                 ) -> MuZeroNet | ConvMuZeroNet:
        prefix = config.lstm_hidden if config.value_prefix else 0
        consistency = (config.consistency_hidden, config.consistency_dim) if config.consistency_coef > 0 else None
        if config.network != "conv" and config.block_norm != "none":
            raise ConfigError(f"agent.block_norm: {config.block_norm} normalises the conv network's residual blocks; "
                              f"this agent's network is mlp -- use network: conv or block_norm: none")
        if config.network == "conv":
            if len(spec.obs_shape) != 3:
                raise ConfigError(f"agent.network: conv needs image observations (H, W, C); this env's are "
                                  f"{spec.obs_shape} -- use network: mlp")
            return ConvMuZeroNet(spec.obs_shape, spec.n_actions, rng, channels=config.conv_channels,
                                 blocks=config.conv_blocks, reduced_channels=config.reduced_channels,
                                 head_hidden=config.head_hidden, value_support=config.value_support,
                                 reward_support=config.reward_support, init=model.init, value_prefix_hidden=prefix,
                                 lstm_horizon=config.lstm_horizon, consistency=consistency,
                                 block_norm=config.block_norm)
        return MuZeroNet(spec.obs_dim, spec.n_actions, rng, state_dim=config.state_dim, hidden=model.hidden,
                         value_support=config.value_support, reward_support=config.reward_support,
                         activation=model.activation, init=model.init, value_prefix_hidden=prefix,
                         lstm_horizon=config.lstm_horizon, consistency=consistency)

    @staticmethod
    def _temperature_schedule(schedule: list) -> list[tuple[int, float]]:
        try:
            pairs = sorted((int(step), float(t)) for step, t in schedule)
        except (TypeError, ValueError):
            raise ConfigError(f"agent.temperature_schedule: expected [[env_step, temperature], ...], got {schedule!r}"
                              ) from None
        if not pairs or any(t < 0 for _, t in pairs):
            raise ConfigError("agent.temperature_schedule: needs at least one [env_step, temperature >= 0] pair")
        return pairs

    def temperature(self) -> float:
        current = self.schedule[0][1]
        for step, t in self.schedule:
            if self.env_steps >= step:
                current = t
        return current

    def _search(self, batch: int) -> MCTS:
        if batch not in self._searches:
            if len(self._searches) >= 4:   # a stream of odd batch sizes must not pile up trees
                self._searches.clear()
            self._searches[batch] = MCTS(self.search_config, self.n_actions)
        return self._searches[batch]

    def _obs(self, obs: np.ndarray) -> np.ndarray:
        return np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)

    # -- acting -----------------------------------------------------------------------------------
    def act(self, obs: np.ndarray, explore: bool = True) -> np.ndarray:
        started = time.process_time()
        obs = self._obs(obs)
        rng = self.rng if explore else self.eval_rng
        result = self._search(len(obs)).run(self.net, obs, rng, explore)
        if explore:
            self._last_search = result   # observe() stores its root values and policies
            self._acted_at = time.process_time()
            self._cpu["search"] += self._acted_at - started
        if result.action is not None:     # Gumbel MuZero chose already (noise-free when evaluating)
            action = result.action
        else:
            action = select_action(result.visit_counts, self.temperature() if explore else 0.0, rng)
        if explore and self.config.act_epsilon > 0:
            # epsilon-random play: the stored policy target stays the search's, only the action changes
            uniform = rng.random(len(action)) < self.config.act_epsilon
            action = np.where(uniform, rng.integers(0, self.n_actions, len(action)), action)
        return action

    # -- storing and training ---------------------------------------------------------------------------
    def observe(self, step: Step) -> dict[str, float]:
        started = time.process_time()
        search = self._last_search
        if search is None:
            raise RuntimeError("observe() without a preceding act(explore=True)")
        if self._acted_at is not None:   # between act() and observe(): the envs stepping
            self._cpu["env"] += started - self._acted_at
        final_values = None
        truncated = np.asarray(step.truncated) & ~np.asarray(step.terminated)
        if truncated.any():
            # a truncated episode's value goes on past its final observation: bootstrap from it
            _, _, final_values = self.net.initial_inference(self._obs(step.next_obs))
        self.replay.add(self._obs(step.obs), step.action, step.reward, search.root_value, search.policy,
                        self._obs(step.next_obs), step.terminated, step.truncated, final_values)
        self._last_search = None
        n = len(step.reward)
        self.env_steps += n
        metrics: dict[str, float] = {"search/root_value": float(search.root_value.mean()),
                                     # collapse diagnostics: near one-hot search policies, action 0's share
                                     "search/policy_peaked": float((search.policy.max(axis=-1) > 0.9).mean()),
                                     "play/action0_share": float((np.asarray(step.action) == 0).mean())}
        if self.env_steps >= self.config.warmup_steps:
            self.train_credit += n * self.config.train_ratio
            while self.train_credit >= 1.0:
                self.train_credit -= 1.0
                metrics.update(self.train_step())
        self._cpu["train"] += time.process_time() - started
        metrics.update(self._cpu_metrics(n))
        return metrics

    def _cpu_metrics(self, n: int) -> dict[str, float]:
        """CPU milliseconds per env step of each part since the last call: search (acting), reanalyze,
        train (the rest of storing and updating) and env (between act and observe). The log's means
        over a window are the window's cost per env step; benchmarks/efficientzero_targets.py reads them."""
        metrics = {f"cpu/{part}_ms": 1000.0 * seconds / n for part, seconds in self._cpu.items()}
        self._cpu = dict.fromkeys(self._cpu, 0.0)
        return metrics

    def _beta(self) -> float:
        c = self.config
        return c.priority_beta + (1.0 - c.priority_beta) * min(1.0, self.env_steps / c.priority_beta_steps)

    def train_step(self) -> dict[str, float]:
        c = self.config
        # (without prioritization every priority is equal, and so is every importance weight: 1)
        sample = self.replay.sample(c.batch_size, self.rng, self._beta())
        metrics = {}
        td = self.td_steps(sample.env, sample.start)
        count = int(round(c.reanalyze_fraction * c.batch_size))
        if count:
            metrics["train/reanalyzed_rows"] = float(self.reanalyze(sample.env, sample.start, count, td))
        window = self.replay.window(sample.env, sample.start, self.window)
        values = self._target_values(window, td) if c.value_target == "target" else None
        batch = make_targets(window, c.unroll_steps, td, c.discount, self.rng, values,
                             lstm_horizon=c.lstm_horizon if c.value_prefix else 0, consistency=c.consistency_coef > 0,
                             search_value=self._search_value(sample.env, sample.start))
        batch.weights = sample.weights
        if self.augment is not None:   # each its own draw, as EfficientZero
            batch.obs = self.augment(batch.obs, self.rng)
            if batch.target_obs is not None:
                batch.target_obs = self.augment(batch.target_obs, self.rng)

        self.net.zero_grad()
        result = unrolled_loss(self.net, batch, value_coef=c.value_coef, state_grad_scale=c.state_grad_scale,
                               consistency_coef=c.consistency_coef, entropy_coef=c.entropy_coef)
        max_norm = c.optim.max_grad_norm
        grad_norm = nn.clip_grad_norm(self.net.flat_grads, max_norm) if max_norm > 0 else 0.0
        self.optimizer.step()
        self.updates += 1
        if self.target is not None and self.updates % c.target_update_interval == 0:
            self.target.copy_from(self.net)

        known = batch.value_mask[:, 0] > 0
        if c.prioritized and known.any():
            errors = np.abs(result.initial_value.astype(np.float64) - batch.target_value[:, 0])
            self.replay.update_priorities(sample.leaf[known], errors[known])
        metrics.update({"loss/total": result.loss, "loss/policy": result.policy_loss, "loss/value": result.value_loss,
                        "loss/reward": result.reward_loss, "train/grad_norm": grad_norm,
                        "train/value_target": float(batch.target_value[:, 0].mean()),
                        "train/lr": self.optimizer.lr})
        if c.entropy_coef > 0:
            metrics["train/policy_entropy"] = result.policy_entropy   # mean H(p_0): how far from one-hot
        if c.consistency_coef > 0:
            metrics["loss/consistency"] = result.consistency_loss
        if c.offpolicy_age_unit:
            metrics["train/td_steps"] = float(np.mean(td))
        return metrics

    def _target_values(self, window: Window, td: int | np.ndarray) -> np.ndarray:
        """The target network's values of a window's rows, as make_targets bootstraps from them: only
        at the rows its n-step sums read (replay.rows_read's without the policy rows, a truncated
        episode's final row among them) -- K + 1 or fewer of the K + n + 1 -- the others are never
        read and stay 0."""
        c = self.config
        rows = rows_read(window, c.unroll_steps, td, stored_values=True, policies=False)
        values = np.zeros(window.status.shape, dtype=self.target.dtype)
        if rows.any():   # none when every sum ends at a terminal within n steps (short episodes, long n)
            values[rows] = self.target.initial_inference(window.obs[rows])[2]
        return values

    def td_steps(self, env: np.ndarray, start: np.ndarray) -> int | np.ndarray:
        """n of each sample's value targets. With EfficientZero's off-policy correction the older the
        data, the less its (stale-policy) rewards are trusted: td = clip(n - age // age_unit, 1, n),
        with the age counted in env steps over all envs (rows written since, times the number of envs)."""
        c = self.config
        if not c.offpolicy_age_unit:
            return c.td_steps
        age = (self.replay.head[env] - 1 - start) * self.replay.num_envs
        return np.clip(c.td_steps - age // c.offpolicy_age_unit, 1, c.td_steps)

    def _search_value(self, env: np.ndarray, start: np.ndarray) -> np.ndarray | None:
        """EfficientZero V2's mixed value target: which samples are old enough (in env steps over all
        envs) to take the search's root values as their value targets."""
        if not self.config.search_value_age:
            return None
        return (self.replay.head[env] - 1 - start) * self.replay.num_envs >= self.config.search_value_age

    def reanalyze(self, env: np.ndarray, start: np.ndarray, count: int, td: int | np.ndarray | None = None) -> int:
        """Re-run the search for ``count`` of these sampled windows, chosen at random by the replay,
        at the rows whose targets are read, in one batched search; overwrite their stored root values
        and policies. The current model without noise (MuZero), or -- EfficientZero -- the target
        network with root noise (``reanalyze_network``, ``reanalyze_noise``). Returns the rows searched."""
        c = self.config
        td = c.td_steps if td is None else td
        started = time.process_time()
        envs, slots = self.replay.reanalyze_rows(env, start, count, c.unroll_steps, td, self.rng,
                                                 stored_values=c.value_target == "search")
        if len(envs):
            net = self.target if c.reanalyze_network == "target" else self.net
            result = self._reanalyze_search.run(net, self.replay.obs[envs, slots], self.rng,
                                                explore=c.reanalyze_noise)
            self.replay.refresh(envs, slots, result.root_value, result.policy)
        spent = time.process_time() - started
        self._cpu["reanalyze"] += spent
        self._cpu["train"] -= spent   # counted inside the update that called it
        return len(envs)

    def components(self) -> dict:
        parts = {"rng": self.rng, "eval_rng": self.eval_rng, "net": self.net, "optimizer": self.optimizer,
                 "replay": self.replay}
        if self.target is not None:
            parts["target"] = self.target
        return parts


@dataclass
class GumbelMuZeroConfig(MuZeroConfig):
    """MuZero's settings with Gumbel MuZero's root search and its small simulation budget."""

    gumbel: bool = True
    num_simulations: int = bounded(8, ge=1)


class GumbelMuZero(MuZero):
    """MuZero with Gumbel MuZero's search: the same agent, other defaults (agent name gumbel_muzero)."""

    Config = GumbelMuZeroConfig


@dataclass
class EfficientZeroConfig(MuZeroConfig):
    """MuZero's settings with EfficientZero's parts switched on (Ye et al. 2021): temporal consistency
    (weight 2), the value prefix, the off-policy correction of the value horizon, reanalysis of part of
    every batch with the target network and root noise, priorities with alpha 0.6."""

    consistency_coef: float = bounded(2.0, ge=0, help="temporal-consistency loss weight (0: off; EfficientZero: 2)")
    value_prefix: bool = bounded(True, help="an LSTM predicts the sum of rewards since its last reset")
    offpolicy_age_unit: int = bounded(10_000, ge=0, help="off-policy correction: n shrinks by one per this many "
                                                         "env steps of a sample's age, down to 1 (0: off)")
    value_target: str = bounded("target", choices=("search", "target"),
                                help="bootstrap n-step targets from stored search values or a target network")
    reanalyze_fraction: float = bounded(0.1, ge=0, le=1, help="share of each batch whose targets are re-searched")
    reanalyze_network: str = bounded("target", choices=("online", "target"),
                                     help="the network a reanalysis searches with (EfficientZero: target)")
    reanalyze_noise: bool = bounded(True, help="root exploration noise in reanalysis searches (EfficientZero: on)")
    priority_alpha: float = bounded(0.6, ge=0)


class EfficientZero(MuZero):
    """MuZero with EfficientZero's parts on: the same agent, other defaults (agent name efficientzero)."""

    Config = EfficientZeroConfig
