"""Environments and wrappers: rlscratch's own envs (registered with gymnasium on import) and the
factory that builds any env from a config.

This folder sits at the top of the source tree (the project's layout) but installs as
``rlscratch.envs`` (pyproject.toml's [tool.setuptools.package-dir]); import it from there."""

import gymnasium as gym

if "rlscratch/MNISTBandit-v0" not in gym.registry:
    gym.register(id="rlscratch/MNISTBandit-v0", entry_point="rlscratch.envs.mnist_bandit:MNISTBandit")
if "rlscratch/RandomWalk-v0" not in gym.registry:
    gym.register(id="rlscratch/RandomWalk-v0", entry_point="rlscratch.envs.random_walk:RandomWalk",
                 kwargs={"n_states": 19})
