"""A2C: synchronous advantage actor-critic (Mnih et al. 2016), with GAE(lambda) as an option.

N parallel envs each take ``n_steps`` steps with the current stochastic policy; the rollout buffer
(rlscratch.rollout) holds those T x N transitions. Then one gradient step on all of them:

    V_{t+1} * gamma + r_t - V_t -> TD_t                    the TD error; V_{t+1} = 0 past an episode end
    TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t        GAE; lam = 1: A_t = R_t - V_t, R_t the n-step return
    O_t --[clip_grad(Policy)]-> pi_t  $  A_t * log(pi_t)   ascend A_t log pi(a_t | s_t), plus an entropy bonus
    O_t --[clip_grad(Value)]-> V_t  =>  A_t + V_t          regress V on the return R_t = A_t + V_t

(docs/notation.md: ``pi $ E`` maximises E with the gradient flowing only through pi; ``=>`` is a mean
squared error to a constant target; ``clip_grad(F)`` scales F's gradient to norm <= max_grad_norm.)
As one loss to descend, averaged over the B = T*N transitions:

    L = -mean_t A_t log pi(a_t|s_t)  -  ent_coef * mean_t H(pi(.|s_t))  +  vf_coef * mean_t (V_t - R_t)^2

A_t and R_t are numbers here (computed from the values before the step): no gradient flows through
them. The gradients with respect to the policy's logits z are written out in rlscratch/policy.py
(``policy_gradient_loss``, ``entropy``) and checked by finite differences in tests/test_policy.py; the
networks then carry them back through their layers by hand like any other loss. Continuous (Box)
actions change only pi: a diagonal Gaussian whose z is [mean | log_std] instead of logits (policy.py's
heads: the same losses, their own d log pi / dz, checked in tests/test_continuous.py).

Pseudocode, per vector step of N envs:

    a ~ pi(.|s)  for every env;  store (s, a, r * reward_scale, done) in the rollout buffer
    once it holds n_steps steps of every env:
        logits, V = Net(all T*N observations)            (kept for backward)
        A, R = GAE(r, V, done, V(s_T), gamma, lam)        (rlscratch.returns)
        dL/dlogits = policy_gradient_loss(A) - ent_coef * dH/dlogits;   dL/dV = vf_coef * d mse(V, R)
        backprop, clip each network's gradient to optim.max_grad_norm, one optimizer step
        empty the buffer

Time limits: a truncated episode's last reward gets gamma * V(final observation) added (the future it
was cut from still had value); a terminated one's does not. rlscratch.rollout.RolloutBuffer does that
fold, rlscratch.returns does the recursions above; acting and the rollout are rlscratch.on_policy's,
shared with PPO (agents/ppo.py, its sibling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlscratch import nn
from rlscratch.on_policy import OnPolicyAgent, OnPolicyConfig


@dataclass
class A2CConfig(OnPolicyConfig):
    """OnPolicyConfig's fields (n_steps 5, gamma, gae_lambda, optim: RMSprop 7e-4 with eps 1e-5 and
    clipping at 0.5, ent_coef, vf_coef, normalize_advantage, reward_scale, shared_network,
    orthogonal_init): one gradient step per rollout needs nothing more."""


class A2C(OnPolicyAgent):
    Config = A2CConfig

    def learn(self, next_obs: np.ndarray) -> dict[str, float]:
        cfg, buf = self.config, self.buffer
        obs, actions = buf.flat(buf.obs), buf.flat(buf.actions)

        # One forward pass over all T*N observations (keeping activations for backward). The
        # parameters have not changed since these actions were taken, so these are the acting values.
        logits, values = self.net(obs)
        buf.values[...] = values.reshape(buf.values.shape)
        # V_{t+1} * gamma + r_t - V_t -> TD_t;  TD_t + gamma * lam * A_{t+1} * (1 - d_t) -> A_t
        buf.compute_advantages(self.net.value(next_obs), cfg.gae_lambda)  # V(s_T) bootstraps the last step
        advantages, returns = buf.flat(buf.advantages), buf.flat(buf.returns)
        if cfg.normalize_advantage:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        # pi_t $ A_t * log(pi_t): descend -A_t log pi(a_t|s_t) - ent_coef * H(pi(.|s_t))
        # (self.head: a categorical over logits, or a Gaussian over [mean | log_std] -- rlscratch.policy)
        policy_loss, dlogits = self.head.policy_gradient_loss(logits, actions, advantages)
        mean_entropy, dentropy = self.head.entropy(logits)
        dlogits -= self.ent_coef(self.env_steps, self.updates) * dentropy
        # V_t => A_t + V_t: vf_coef * mean (V_t - R_t)^2
        value_loss, dvalues = nn.mse(values, returns)
        dvalues *= cfg.vf_coef

        self.net.zero_grad()
        self.net.backward((dlogits, dvalues))
        # clip_grad(Policy), clip_grad(Value)
        policy_norm, value_norm = self.net.clip_grad(cfg.optim.max_grad_norm)
        lr = self.optimizer.lr
        self.optimizer.step()
        self.updates += 1
        metrics = {"loss/policy": policy_loss, "loss/value": value_loss, "loss/entropy": mean_entropy,
                   "train/grad_norm_policy": policy_norm, "train/grad_norm_value": value_norm, "train/lr": lr}
        if returns.var() > 0:  # 1 - Var(R - V) / Var(R): how much of the returns' spread V explains
            metrics["train/explained_variance"] = 1.0 - float((returns - values).var() / returns.var())
        return metrics
