"""MuZero: a learned model (representation, dynamics, prediction), batched tree search inside it,
and the pieces that train it. The agent that plays with them is rlscratch.agents.muzero.

Reading order: support.py (values as categorical distributions), model.py (the three networks),
loss.py (the K-step unrolled loss, backward by hand), mcts.py (MuZero's pUCT search and Gumbel
MuZero's root search, over many roots at once), replay.py (game segments, prioritized sampling,
the targets)."""
