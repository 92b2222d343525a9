"""The project's arrow notation for networks, parsed, printed and compiled into trainable Modules.

    from rlscratch.notation import compile_program
    model = compile_program('''
        X: 784
        M_1: dense(128)
        X --[M_1|relu]-> h --[M_2|softmax]-> p => one_hot(y)
    ''', rng)
    model.forward(x)                      # p, the class probabilities
    loss = model.backward_loss({"y": y})  # cross-entropy, backpropagated into M_1 and M_2

docs/notation.md has the grammar and how every construct maps to a forward and a backward pass;
``python -m rlscratch.notation FILE`` prints a program's parameters and its backward pass;
``python -m rlscratch.notation emit FILE`` writes it as a standalone numpy module (emit.py).
"""

from .emit import emit
from .explain import explain
from .model import NotationModel, compile_program, network_from_notation
from .parser import parse
from .syntax import NotationError, Program, format_program

__all__ = ["NotationError", "NotationModel", "Program", "compile_program", "emit", "explain", "format_program",
           "network_from_notation", "parse"]
