"""An agent program: the notes' interaction lines (reset, step, acting, replay) around a network program.

The notes write a whole agent as one program: the network and its losses in the arrow notation, and
around them the lines that talk to the world::

    reset() -> O_1                              the env's first observation
    sample(pi_t) -> a_t                         act: a_t ~ pi_t              (on-policy agents)
    epsilon_greedy(q_t) -> a_t                  act: argmax_a q_t, or a random action with probability epsilon
    behave() -> a_t                             act: a fixed uniform behaviour policy (TD prediction)
    step(a_t) -> O_{t+1}, r_t, d_t              the env's answer: next observation, reward, episode end
    Add_B(O_t, a_t, r_t, d_t, O_{t+1})          store the transition in the replay buffer
    Get_B() -> O_t, a_t, r_t, g_t, O_{t+1}      a replayed batch (T = 1); g_t = the discount of the return r_t
    copy(Q_1, Q_2) -> T_1, T_2                  a target network: T_k <- Q_k every target_update_interval updates

These lines are not arithmetic on states, so they are not compiled: ``split_agent_program`` reads them
(each must be one of the forms above, written on one line) and hands the rest -- the network and its
losses -- to the compiler with the interaction lines blanked out, so every error still points at the
right line. The agent (agents/notation.py) does what the lines say with the project's own parts:
the trainer's vector env for ``reset``/``step``, ``rlscratch.buffers.ReplayBuffer`` for ``Add_B``/``Get_B``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .parser import parse
from .syntax import NotationError, Number, State, Statement

_STATE = r"([A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*?)(?:_(?:t|\{t\}|\{t\+1\}|1|\{1\}))?"
_FUNCTIONS = ("reset", "step", "sample", "epsilon_greedy", "behave", "Add_B", "Get_B", "copy")
_FORMS = {
    "reset": "reset() -> O_1",
    "step": "step(a_t) -> O_{t+1}, r_t, d_t",
    "sample": "sample(pi_t) -> a_t",
    "epsilon_greedy": "epsilon_greedy(q_t) -> a_t",
    "behave": "behave() -> a_t",
    "Add_B": "Add_B(O_t, a_t, r_t, d_t, O_{t+1})",
    "Get_B": "Get_B() -> O_t, a_t, r_t, g_t, O_{t+1}",
    "copy": "copy(Q_1, Q_2) -> T_1, T_2",
}
_LINE = re.compile(r"^\s*(\w+)\s*\(([^()]*)\)\s*(?:->\s*(.*?))?\s*(?:#.*)?$")


@dataclass
class AgentProgram:
    """What the interaction lines say, and the network program left when they are taken out."""

    network: str  # the program text with the interaction lines blanked (line numbers kept)
    obs: str = ""  # the observation's name (O)
    action: str = ""  # the action's name (a)
    reward: str = ""  # r
    done: str = ""  # d
    act: str = ""  # "sample" or "epsilon_greedy"
    acted_on: str = ""  # the state acting reads (pi, q)
    replay: bool = False
    discount: str = ""  # g: Get_B's discount of the n-step return
    targets: dict[str, str] = field(default_factory=dict)  # target parameter -> online parameter
    lines: list[str] = field(default_factory=list)  # the interaction lines, as written
    constants: dict[str, float] = field(default_factory=dict)  # 0.99 -> gamma, ...


def _names(text: str, line: int, form: str) -> list[str]:
    names = []
    for part in (p.strip() for p in text.split(",")):
        match = re.fullmatch(_STATE, part)
        if not match:
            raise NotationError(f"expected a state such as O_t or O_{{t+1}} in '{part}' (the form is: {form})", line, 1)
        names.append(match.group(1))
    return names


def _parameters(text: str, line: int, form: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise NotationError(f"expected a parameter name such as Q_1, not '{name}' (the form is: {form})", line, 1)
    return names


def split_agent_program(text: str) -> AgentProgram:
    """Separate the interaction lines from the network program; check they describe one agent."""
    kept, found = [], AgentProgram(network="")
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        head = raw.split("#", 1)[0].strip()
        call = re.match(r"(\w+)\s*\(", head)
        if not call or call.group(1) not in _FUNCTIONS or "--[" in head:
            kept.append(raw)
            continue
        fn = call.group(1)
        form = _FORMS[fn]
        match = _LINE.match(head)
        if not match:
            raise NotationError(f"cannot read this {fn} line; write it on one line as: {form}", number, 1)
        args, rest = match.group(2).strip(), match.group(3)
        names = _parameters if fn == "copy" else _names  # copy names parameters (T_1), not states (O_1)
        outs = names(rest, number, form) if rest else []
        ins = names(args, number, form) if args else []
        expect = {"reset": (0, 1), "step": (1, 3), "sample": (1, 1), "epsilon_greedy": (1, 1), "behave": (0, 1),
                  "Add_B": (5, 0), "Get_B": (0, 5)}
        if fn in expect and (len(ins), len(outs)) != expect[fn]:
            raise NotationError(f"{fn} takes {expect[fn][0]} argument(s) and gives {expect[fn][1]} state(s); "
                                f"write: {form}", number, 1)
        if fn in seen and fn != "copy":
            raise NotationError(f"{fn} is already written on line {seen[fn]}; an agent program has one", number, 1)
        seen[fn] = number
        if fn == "reset":
            found.obs = outs[0]
        elif fn == "step":
            found.action, (found.obs, found.reward, found.done) = ins[0], outs
        elif fn in ("sample", "epsilon_greedy", "behave"):
            if found.act:
                raise NotationError(f"the program already acts with {found.act}; write one acting line", number, 1)
            found.act, found.acted_on, found.action = fn, ins[0] if ins else "", outs[0]
        elif fn == "Get_B":
            found.replay = True
            found.discount = outs[3]
        elif fn == "copy":
            if len(ins) != len(outs) or not ins:
                raise NotationError(f"copy needs as many targets as sources; write: {form}", number, 1)
            found.targets.update(zip(outs, ins))
        found.lines.append(raw.strip())
        kept.append("# " + raw.strip())  # blanked: the compiler sees a comment, the line numbers stay
    for fn in ("reset", "step"):
        if fn not in seen:
            raise NotationError(f"an agent program needs a '{_FORMS[fn]}' line (the environment's {fn})")
    if not found.act:
        raise NotationError("an agent program needs an acting line: 'sample(pi_t) -> a_t', "
                            "'epsilon_greedy(q_t) -> a_t' or 'behave() -> a_t'")
    if ("Add_B" in seen) != ("Get_B" in seen):
        raise NotationError("a replay buffer needs both 'Add_B(...)' and 'Get_B() -> ...' lines")
    found.network = "\n".join(kept) + "\n"
    found.constants = _constants(found.network)
    return found


def _constants(network: str) -> dict[str, float]:
    """The numbers the program binds to names (``0.99 -> gamma``): the agent reads gamma from here."""
    constants = {}
    for statement in parse(network).items:
        if not isinstance(statement, Statement):
            continue
        sources = statement.sources
        if len(sources) == 1 and isinstance(sources[0], Number) and len(statement.links) == 1:
            targets = statement.links[0].targets
            if len(targets) == 1 and isinstance(targets[0], State) and targets[0].index is None:
                constants[targets[0].name] = sources[0].value
    return constants


def is_agent_program(text: str) -> bool:
    """True when the text has interaction lines (reset, step, ...): it is an agent, not just a network."""
    return any(re.match(r"\s*(reset|step)\s*\(", line) for line in text.splitlines())


# -- where programs live, and the on-policy rollout an agent program fills ----------------------------
PROGRAMS = Path(__file__).parent / "programs"  # the notes' agents, installed with the package


def find_program(name: str) -> Path:
    """A program file: the path as given (from the working directory), else one of the shipped programs."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = PROGRAMS / name
    if shipped.is_file():
        return shipped
    known = ", ".join(sorted(p.name for p in PROGRAMS.glob("*.arrow")))
    raise NotationError(f"no program file '{name}' (not a file here, nor a shipped program: {known})")


def read_program(name: str) -> tuple[Path, str]:
    path = find_program(name)
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NotationError(f"{path} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset {err.start}); "
                            "save it with UTF-8 encoding") from None


class Rollout:
    """Per-step records of all N envs: obs (T, N, ...), actions, rewards, done flags; T fixed (n_steps) or
    growing until the episode ends (n_steps = 0). Saved whole in checkpoints: a resumed run continues the
    rollout it was in the middle of."""

    FIELDS = ("obs", "actions", "rewards", "dones")

    def __init__(self) -> None:
        self.rows: dict[str, list[np.ndarray]] = {name: [] for name in self.FIELDS}

    def __len__(self) -> int:
        return len(self.rows["obs"])

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, dones: np.ndarray) -> None:
        for name, value in zip(self.FIELDS, (obs, actions, rewards, dones)):
            self.rows[name].append(np.array(value))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.stack(rows) for name, rows in self.rows.items()}

    def clear(self) -> None:
        for rows in self.rows.values():
            rows.clear()

    def state_dict(self) -> dict[str, np.ndarray]:
        return {name: np.stack(rows) for name, rows in self.rows.items() if rows}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.rows = {name: list(state[name]) if name in state else [] for name in self.FIELDS}
