"""PPO: proximal policy optimisation with the clipped surrogate (Schulman et al. 2017).

Acting and the rollout buffer are shared with A2C, its sibling (rlscratch/on_policy.py): N envs x
``n_steps`` steps, then GAE(lambda):

    V_{t+1} * gamma + r_t - V_t -> TD_t
    TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t,     R_t = A_t + V_t

What changes is how much is learned from one rollout. A2C takes one gradient step; PPO takes
``n_epochs`` passes over it in shuffled minibatches, and keeps the new policy close to the one that
acted ("old") by clipping the probability ratio rho_t = pi(a_t|s_t) / pi_old(a_t|s_t):

    L_clip = -mean_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t)

or, in the notes' arrows (docs/notation.md; pi_old's log-probabilities are constants of the rollout):

    pi_t[a_t] / pi_old[a_t] -> rho_t
    O_t --[clip_grad(Policy)]-> pi_t  $  min(rho_t * A_t, clip(rho_t, 1 - eps, 1 + eps) * A_t)

Once rho_t has moved past 1 + eps in the direction A_t favours (or past 1 - eps, for A_t < 0), the
clipped term is the smaller one and has zero gradient: the step stops pushing that action. The loss
descended on each minibatch:

    L = L_clip  -  ent_coef * mean_t H(pi(.|s_t))  +  vf_coef * L_value

with L_value = mean_t (V_t - R_t)^2, or with value clipping (``clip_range_vf``) the larger of that
and the error of V_old + clip(V - V_old, -eps_v, eps_v). Options: advantage normalisation per
minibatch, schedules for the learning rate (``optim.lr``) and the clip range (``clip_range``), and a
KL early stop that ends the update once the policy has moved more than ``target_kl`` from the old one.

For Box actions "logits" below read "z = [mean | log_std] of a diagonal Gaussian" (rlscratch/policy.py):
the ratio, the clipping and the value loss are unchanged.

Pseudocode, once the rollout buffer holds n_steps steps of every env:

    logp_old, V_old = log pi(a|s), V(s) under the parameters that acted     (no gradient)
    A, R = GAE(r, V_old, done, V(s_T), gamma, lam)
    repeat n_epochs times, over a fresh shuffle of the T*N transitions in minibatches of batch_size:
        logits, V = Net(minibatch)                       (kept for backward)
        L_clip and dL/dlogits = clipped_surrogate(...);  stop all epochs if approx KL > target_kl
        dL/dlogits -= ent_coef * dH/dlogits;   dL/dV = vf_coef * d(value loss)
        backprop, clip each network's gradient to optim.max_grad_norm, one optimizer step
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.agent import EnvSpec
from rlscratch.config import ModelConfig, bounded
from rlscratch.on_policy import OnPolicyAgent, OnPolicyConfig
from rlscratch.optim_config import OptimConfig, Schedule, ScheduleSpec, optim_field
from rlscratch.policy import CategoricalHead, PolicyHead


# -- the clipped objectives and their gradients --------------------------------------------------------
def clipped_surrogate(logits: np.ndarray, actions: np.ndarray, old_log_probs: np.ndarray,
                      advantages: np.ndarray, clip: float, head: PolicyHead | None = None
                      ) -> tuple[float, np.ndarray, dict[str, float]]:
    """L = -1/B sum_t min(rho_t A_t, clip(rho_t, 1-eps, 1+eps) A_t),  rho_t = exp(log pi(a_t|s_t) - log pi_old),
    and dL/dz.

    Where the unclipped term is the minimum, d/dz of rho_t A_t = A_t rho_t d log pi(a_t|s_t)/dz
    = A_t rho_t (onehot(a_t) - pi_t); where the clipped one is, the gradient is 0 (a constant times A_t).
    So  dL/dz_t = -[rho_t A_t <= clipped_t A_t] A_t rho_t (onehot(a_t) - pi_t) / B.
    ``head``: the policy's distribution (default categorical over logits z); a Gaussian's z is
    [mean | log_std] and d log pi/dz its own (rlscratch.policy) -- the clipping is the same.
    Also returns the approximate KL(old || new) = mean (rho - 1) - log rho (Schulman's low-variance
    estimator) and the fraction of clipped ratios.
    """
    head = head or CategoricalHead(logits.shape[1])
    B = len(actions)
    log_ratio = head.log_prob(logits, actions) - old_log_probs
    ratio = np.exp(log_ratio)
    advantages = advantages.astype(logits.dtype, copy=False)
    unclipped = ratio * advantages
    clipped = np.clip(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -float(np.minimum(unclipped, clipped).mean())
    # dL/dlog pi(a_t|s_t): nonzero only where the unclipped term is the minimum
    dlogp = np.where(unclipped <= clipped, -unclipped / B, 0.0).astype(logits.dtype)
    dlogits = head.log_prob_backward(logits, actions, dlogp)  # categorical: dlogp_t (onehot(a_t) - pi_t)
    stats = {"approx_kl": float(np.mean(ratio - 1.0 - log_ratio)),
             "clip_fraction": float(np.mean(np.abs(ratio - 1.0) > clip))}
    return loss, dlogits, stats


def clipped_value_loss(values: np.ndarray, old_values: np.ndarray, returns: np.ndarray, clip: float
                       ) -> tuple[float, np.ndarray]:
    """L = 1/B sum_t max((V_t - R_t)^2, (Vc_t - R_t)^2),  Vc_t = V_old + clip(V_t - V_old, -eps, eps),
    and dL/dV: 2 (V_t - R_t) / B where the unclipped error is the larger; where the clipped one is,
    2 (Vc_t - R_t) / B while V_t is inside the clip range and 0 outside it (Vc_t is then a constant)."""
    B = len(values)
    delta = values - old_values
    clipped_values = old_values + np.clip(delta, -clip, clip)
    err = values - returns
    err_clipped = clipped_values - returns
    use_unclipped = err * err >= err_clipped * err_clipped
    loss = float(np.maximum(err * err, err_clipped * err_clipped).mean())
    inside = np.abs(delta) < clip
    dvalues = np.where(use_unclipped, err, np.where(inside, err_clipped, 0.0)) * (2.0 / B)
    return loss, dvalues.astype(values.dtype)


# -- the agent -----------------------------------------------------------------------------------------
@dataclass
class PPOConfig(OnPolicyConfig):
    n_steps: int = bounded(128, ge=1, help="steps per env per rollout")
    gae_lambda: float = bounded(0.95, ge=0, le=1)
    optim: OptimConfig = optim_field(name="adam", lr=2.5e-4, eps=1e-5, max_grad_norm=0.5)
    normalize_advantage: bool = True  # per minibatch
    n_epochs: int = bounded(4, ge=1, help="passes over each rollout")
    batch_size: int = bounded(64, ge=1, help="minibatch size (transitions)")
    clip_range: ScheduleSpec = bounded(0.2, gt=0, help="epsilon of the ratio clip: a number or a schedule")
    clip_range_vf: float | None = bounded(None, gt=0, help="value clipping; null: off")
    target_kl: float | None = bounded(None, gt=0, help="stop an update's epochs past this approximate KL")


class PPO(OnPolicyAgent):
    """The on-policy base's acting and rollouts; ``learn`` runs the clipped-surrogate epochs."""

    Config = PPOConfig

    def __init__(self, config: PPOConfig, spec: EnvSpec, model: ModelConfig, rng: np.random.Generator) -> None:
        super().__init__(config, spec, model, rng)
        self.clip_range = Schedule(config.clip_range, "agent.clip_range")

    def learn(self, next_obs: np.ndarray) -> dict[str, float]:
        cfg, buf = self.config, self.buffer
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)

        # The "old" policy and values: the parameters that acted, one batched pass over the rollout.
        logits, values = self.net.infer(obs)
        buf.values[...] = values.reshape(buf.values.shape)
        buf.log_probs[...] = self.head.log_prob(logits, actions).reshape(buf.log_probs.shape)
        # V_{t+1} * gamma + r_t - V_t -> TD_t;  TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t
        buf.compute_advantages(self.net.value(next_obs), cfg.gae_lambda)
        old_log_probs, old_values = buf.flat(buf.log_probs), buf.flat(buf.values)
        advantages, returns = buf.flat(buf.advantages), buf.flat(buf.returns)

        clip = self.clip_range(self.env_steps, self.updates)
        ent_coef = self.ent_coef(self.env_steps, self.updates)
        lr = self.optimizer.lr
        B = len(actions)
        totals = {"loss/policy": 0.0, "loss/value": 0.0, "loss/entropy": 0.0, "train/approx_kl": 0.0,
                  "train/clip_fraction": 0.0, "train/grad_norm_policy": 0.0, "train/grad_norm_value": 0.0}
        steps, stopped = 0, False
        for _epoch in range(cfg.n_epochs):
            order = self.rng.permutation(B)
            for start in range(0, B, cfg.batch_size):
                idx = order[start:start + cfg.batch_size]
                logits, values = self.net(obs[idx])  # keeps activations for backward
                adv = advantages[idx]
                if cfg.normalize_advantage and len(idx) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)

                policy_loss, dlogits, stats = clipped_surrogate(logits, actions[idx], old_log_probs[idx], adv, clip,
                                                                self.head)
                if cfg.target_kl is not None and stats["approx_kl"] > cfg.target_kl:
                    self.net.clear_saved()  # this forward pass will never be backpropagated
                    stopped = True
                    break
                mean_entropy, dentropy = self.head.entropy(logits)
                dlogits -= ent_coef * dentropy
                if cfg.clip_range_vf is None:
                    value_loss, dvalues = nn.mse(values, returns[idx])
                else:
                    value_loss, dvalues = clipped_value_loss(values, old_values[idx], returns[idx], cfg.clip_range_vf)
                dvalues *= cfg.vf_coef

                self.net.zero_grad()
                self.net.backward((dlogits, dvalues))
                policy_norm, value_norm = self.net.clip_grad(cfg.optim.max_grad_norm)
                self.optimizer.step()
                steps += 1
                for key, value in (("loss/policy", policy_loss), ("loss/value", value_loss),
                                   ("loss/entropy", mean_entropy), ("train/approx_kl", stats["approx_kl"]),
                                   ("train/clip_fraction", stats["clip_fraction"]),
                                   ("train/grad_norm_policy", policy_norm), ("train/grad_norm_value", value_norm)):
                    totals[key] += value
            if stopped:
                break

        self.updates += steps
        metrics = {key: value / max(steps, 1) for key, value in totals.items()}
        metrics.update({"train/lr": lr, "train/clip_range": clip, "train/gradient_steps": steps})
        if returns.var() > 0:
            metrics["train/explained_variance"] = 1.0 - float((returns - old_values).var() / returns.var())
        return metrics
