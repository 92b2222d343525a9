"""MuZero: a learned model (representation, dynamics, prediction), batched tree search inside it,
and the pieces that train it. The agent that plays with them is rlscratch.agents.muzero.

Reading order: support.py (values as categorical distributions), model.py (the three networks),
loss.py (the K-step unrolled loss, backward by hand), mcts.py (one batched search; MuZero's pUCT and
Gumbel MuZero's selection as separate functions), replay.py (game segments, prioritized sampling,
the rows a reanalysis searches), targets.py (the K-step targets read from the replay). fast.py holds
the speed paths (the model's search-time inference, a one-root search on Python numbers), each
tested equal to the readable code.

EfficientZero's parts, each switched on from the agent's config: consistency.py (self-supervised
temporal consistency), value_prefix.py (the LSTM value prefix, in training and in the search),
conv_model.py (the conv networks for image observations)."""
