"""The agents, one module each (agents/dqn.py is the model agent file to read first).

This folder sits at the top of the source tree (the project's layout) but installs as
``rlscratch.agents`` (pyproject.toml's [tool.setuptools.package-dir]); import agents from there. The
registry of names for configs is ``rlscratch.agent.AGENTS``.
"""
