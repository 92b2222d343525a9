"""The arrow notation's parser: text -> tokens -> syntax tree (syntax.py).

The notation is the project's chalkboard language for networks (docs/notation.md has the grammar)::

    M_1: dense(128)                                           # a parameter, sized once
    X --[M_1|relu]-> h_1 --[M_2|softmax]-> p => one_hot(y)    # forward, then the loss

This module only reads and writes text. It turns a program into a tree of small frozen dataclasses
(``Program`` of ``Decl``, ``Macro`` and ``Statement``) and back into canonical text
(``format_program``), so ``parse(format_program(parse(text))) == parse(text)`` for every program.
What the tree *means* -- shapes, forward, backward -- is the compiler's job (lowering.py onwards).

Every syntax error is a ``NotationError`` naming the line, the column and what was expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .syntax import (  # noqa: F401 -- the tree and printer are also importable from here
    BUILTIN_FUNCTIONS,
    BinOp,
    Call,
    Compose,
    Concat,
    Decl,
    Expr,
    Fn,
    FnArg,
    FnCall,
    FnDecl,
    FnRef,
    Index,
    Link,
    Loss,
    Macro,
    Neg,
    NotationError,
    Number,
    Pick,
    Program,
    State,
    Statement,
    format_expr,
    format_fn,
    format_program,
    format_statement,
    parse_index,
    split_state_name,
)


# -- tokens -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # "name", "number", "op", "newline" (a line break or ';') or "eof"
    text: str
    line: int
    column: int

    def describe(self) -> str:
        return {"newline": "the end of the line", "eof": "the end of the program"}.get(self.kind, f"'{self.text}'")


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r]+)
  | (?P<comment>\#[^\n]*)
  | (?P<newline>\n|;)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:_\{[^}\n]*\})?)
  | (?P<op>--\[|->|=>|[\[\]()|,$:=+\-*/])
""", re.VERBOSE)

# A line ending in one of these continues on the next line (so a long chain can be broken after an
# arrow); inside (...), [...] and --[...] line breaks never end a statement.
_CONTINUES = {"->", "--[", "|", ",", "+", "-", "*", "/", "=>", "$", "="}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    depth = 0
    line, line_start, pos = 1, 0, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if match is None:
            raise NotationError(f"unexpected character '{text[pos]}'", line, column)
        kind, value = match.lastgroup, match.group()
        pos = match.end()
        if kind == "newline":
            continued = depth > 0 or (value == "\n" and tokens and tokens[-1].text in _CONTINUES
                                      and tokens[-1].kind == "op")
            if not continued and not (tokens and tokens[-1].kind == "newline"):
                tokens.append(Token("newline", value, line, column))
            if value == "\n":
                line, line_start = line + 1, pos
            continue
        if kind in ("space", "comment"):
            continue
        if value in ("(", "[", "--["):
            depth += 1
        elif value in (")", "]"):
            depth = max(depth - 1, 0)
        tokens.append(Token(kind, value, line, column))
    tokens.append(Token("eof", "", line, pos - line_start + 1))
    return tokens



class Parser:
    """Recursive descent over the token list, one method per grammar rule (docs/notation.md)."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    # -- helpers --------------------------------------------------------------------------------
    def peek(self, k: int = 0) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def at(self, *texts: str) -> bool:
        token = self.peek()
        return token.kind == "op" and token.text in texts

    def advance(self) -> Token:
        token = self.peek()
        self.i += 1
        return token

    def error(self, expected: str, token: Token | None = None) -> NotationError:
        token = token or self.peek()
        return NotationError(f"expected {expected}, found {token.describe()}", token.line, token.column)

    def expect(self, text: str, expected: str) -> Token:
        if not self.at(text):
            raise self.error(expected)
        return self.advance()

    def expect_name(self, expected: str) -> Token:
        if self.peek().kind != "name":
            raise self.error(expected)
        return self.advance()

    def skip_newlines(self) -> None:
        while self.peek().kind == "newline":
            self.advance()

    def end_of_line(self) -> None:
        if self.peek().kind not in ("newline", "eof"):
            raise self.error("the end of the line")
        self.skip_newlines()

    # -- program structure ----------------------------------------------------------------------
    def program(self) -> Program:
        items: list[Decl | Macro | Statement] = []
        self.skip_newlines()
        while self.peek().kind != "eof":
            if self.peek().text == "return" and self.peek().kind == "name":
                token = self.peek()
                raise NotationError("'return' outside a macro (a macro starts with a line like 'Enc: x_t, h_{t-1}')",
                                    token.line, token.column)
            items.append(self.item())
            self.end_of_line()
        return Program(tuple(items))

    def _header_names(self) -> int:
        """How many tokens a ``NAME, NAME, ... :`` header spans (0 if the line is not one)."""
        k = 0
        while True:
            if self.peek(k).kind != "name":
                return 0
            k += 1
            token = self.peek(k)
            if token.kind == "op" and token.text == ":":
                return k + 1
            if not (token.kind == "op" and token.text == ","):
                return 0
            k += 1

    def item(self) -> Decl | Macro | Statement:
        span = self._header_names()
        if not span:
            return self.statement()
        start = self.peek()
        names = tuple(self.tokens[self.i + k].text for k in range(0, span - 1, 2))
        self.i += span
        after, following = self.peek(), self.peek(1)
        if after.kind == "number":
            self.advance()
            return Decl(names, Number(float(after.text), after.text, (after.line, after.column)),
                        (start.line, start.column))
        is_builtin = after.kind == "name" and after.text in BUILTIN_FUNCTIONS
        if after.kind == "name" and (following.text == "(" or is_builtin and following.kind in ("newline", "eof")):
            return Decl(names, self.fn_spec(), (start.line, start.column))
        if len(names) > 1:
            raise self.error("a size (X, Y: 784) or a function (W_r, W_z: dense(4)) after the names")
        return self.macro(names[0], start)

    def macro(self, name: str, start: Token) -> Macro:
        params = [self.state("the macro's first argument, e.g. 'Enc: x_t, h_{t-1}'")]
        while self.at(","):
            self.advance()
            params.append(self.state("another argument after ','"))
        if self.peek().kind != "newline":
            raise self.error(f"the end of the line after the header of macro '{name}'")
        self.skip_newlines()
        body: list[Statement] = []
        while not (self.peek().kind == "name" and self.peek().text == "return"):
            token = self.peek()
            if token.kind == "eof":
                raise NotationError(f"macro '{name}' (line {start.line}) has no 'return' line", token.line,
                                    token.column)
            if self._header_names():
                raise NotationError(f"declarations and macros go outside macro '{name}' (which ends at its "
                                    "'return' line)", token.line, token.column)
            body.append(self.statement())
            self.end_of_line()
        self.advance()  # 'return'
        returns = [self.state("the state(s) the macro returns, e.g. 'return h_t'")]
        while self.at(","):
            self.advance()
            returns.append(self.state("another returned state after ','"))
        return Macro(name, tuple(params), tuple(body), tuple(returns), (start.line, start.column))

    # -- statements -----------------------------------------------------------------------------
    def statement(self) -> Statement:
        start = self.peek()
        if start.kind not in ("name", "number") and not self.at("(", "-"):
            raise self.error("a statement (a state, a number or a declaration such as 'M_1: dense(128)')")
        sources = [self.expr()]
        while self.at(","):
            self.advance()
            sources.append(self.expr())
        links: list[Link] = []
        while self.at("--[", "->"):
            links.append(self.link())
        loss = None
        if self.at("=>", "$"):
            token = self.advance()
            loss = Loss(token.text, self.expr(), (token.line, token.column))
        if not links and loss is None:
            raise self.error("'--[', '->', '=>' or '$' after the expression")
        return Statement(tuple(sources), tuple(links), loss, (start.line, start.column))

    def link(self) -> Link:
        opener = self.advance()
        fn = None
        if opener.text == "--[":
            fn = self.fn_expr()
            if not self.at("]"):
                raise self.error(f"'|' or ']' to close the '--[' opened at line {opener.line}, column {opener.column}")
            self.advance()
            self.expect("->", "'->' after ']' (an arrow is written --[F]-> )")
        targets = [self.state("the state the arrow defines, e.g. 'h_1'")]
        while self.at(","):
            self.advance()
            targets.append(self.state("another state after ','"))
        return Link(fn, tuple(targets), (opener.line, opener.column))

    def state(self, expected: str) -> State:
        token = self.expect_name(expected)
        if self.at("("):
            raise self.error(f"a state here, not a call of '{token.text}'", self.peek())
        try:
            name, index = split_state_name(token.text)
        except ValueError as err:
            raise NotationError(str(err), token.line, token.column) from None
        return State(name, index, (token.line, token.column))

    # -- function expressions (inside --[ ]) ----------------------------------------------------
    def fn_expr(self) -> Fn:
        start = self.peek()
        parts = [self.fn_term()]
        while self.at("|"):
            self.advance()
            parts.append(self.fn_term())
        return parts[0] if len(parts) == 1 else Compose(tuple(parts), (start.line, start.column))

    def fn_term(self) -> Fn:
        token = self.expect_name("a function or parameter name (e.g. 'M_1', 'relu', 'dense(128)')")
        pos = (token.line, token.column)
        if self.at(":"):
            self.advance()
            return FnDecl(token.text, self.fn_spec(), pos)
        if self.at("("):
            return self.fn_call(token)
        return FnRef(token.text, pos)

    def fn_spec(self) -> FnRef | FnCall:
        token = self.expect_name("a function such as 'dense(128)'")
        return self.fn_call(token) if self.at("(") else FnRef(token.text, (token.line, token.column))

    def fn_call(self, name: Token) -> FnCall:
        self.advance()  # '('
        args: list[FnArg] = []
        kwargs: list[tuple[str, FnArg]] = []
        while not self.at(")"):
            if args or kwargs:
                self.expect(",", f"',' or ')' in the arguments of '{name.text}'")
            token = self.peek()
            if token.kind == "name" and self.peek(1).text == "=":
                self.advance()
                self.advance()
                kwargs.append((token.text, self.fn_arg()))
            elif kwargs:
                raise self.error(f"a keyword argument (name=value): positional ones come first in '{name.text}'")
            else:
                args.append(self.fn_arg())
        self.advance()  # ')'
        return FnCall(name.text, tuple(args), tuple(kwargs), (name.line, name.column))

    def fn_arg(self) -> FnArg:
        token = self.peek()
        if token.kind == "number" or (self.at("-") and self.peek(1).kind == "number"):
            return self.number()
        if token.kind != "name":
            raise self.error("an argument (a number, a name or a function)")
        return self.fn_expr()

    def number(self) -> Number:
        start = self.peek()
        sign = ""
        if self.at("-"):
            self.advance()
            sign = "-"
        token = self.advance()
        return Number(float(sign + token.text), sign + token.text, (start.line, start.column))

    # -- expressions: | binds loosest, then + -, then * /, then unary -, then [ ] ----------------
    def expr(self) -> Expr:
        start = self.peek()
        parts = [self.sum()]
        while self.at("|"):
            self.advance()
            parts.append(self.sum())
        return parts[0] if len(parts) == 1 else Concat(tuple(parts), (start.line, start.column))

    def sum(self) -> Expr:
        left = self.product()
        while self.at("+", "-"):
            token = self.advance()
            left = BinOp(token.text, left, self.product(), (token.line, token.column))
        return left

    def product(self) -> Expr:
        left = self.unary()
        while self.at("*", "/"):
            token = self.advance()
            left = BinOp(token.text, left, self.unary(), (token.line, token.column))
        return left

    def unary(self) -> Expr:
        if self.at("-"):
            token = self.advance()
            return Neg(self.unary(), (token.line, token.column))
        return self.postfix()

    def postfix(self) -> Expr:
        value = self.atom()
        while self.at("["):
            token = self.advance()
            index = self.expr()
            self.expect("]", "']' to close the '[' of an index such as pi_t[a_t]")
            value = Pick(value, index, (token.line, token.column))
        return value

    def atom(self) -> Expr:
        token = self.peek()
        if token.kind == "number":
            self.advance()
            return Number(float(token.text), token.text, (token.line, token.column))
        if self.at("("):
            self.advance()
            inner = self.expr()
            self.expect(")", "')' to close the '('")
            return inner
        if token.kind == "name":
            if self.peek(1).kind == "op" and self.peek(1).text == "(":
                self.advance()
                self.advance()
                args = [self.expr()]
                while self.at(","):
                    self.advance()
                    args.append(self.expr())
                self.expect(")", f"',' or ')' in the call of '{token.text}'")
                return Call(token.text, tuple(args), (token.line, token.column))
            return self.state("a state")
        raise self.error("a state, a number, a call such as log(x) or '('")


def parse(text: str) -> Program:
    """Read a program; raises NotationError (with line and column) on the first syntax error."""
    return Parser(text).program()
