"""Recursive-descent parser from VNN-LIB text to a normalized :class:`Spec`.

Grammar (the VNN-LIB subset of SMT-LIB used by VNN-COMP)::

    file     := command*
    command  := (declare-const NAME Real)         NAME is X_<i> or Y_<j>
              | (assert formula)                  top-level asserts are conjoined
              | (check-sat) | (get-model) | (exit) | (set-logic ..) | (set-info ..)
              | (set-option ..)                   accepted and ignored
    formula  := (and formula*) | (or formula*) | true | false
              | (OP term term)                    OP in <= >= < > =
    term     := NUMBER | NAME | (+ term*) | (- term) | (- term term*)
              | (* term term*) | (/ term NUMBER*) at most one non-constant factor

Semantics, all exact except the first point:

* strict comparisons ``<``/``>`` are read as ``<=``/``>=``: the unsafe set
  grows by its boundary, so ``unsat`` stays sound, while a counterexample
  found exactly on that boundary would still have to be re-checked;
* ``(= a b)`` is the two rows ``a <= b`` and ``a >= b``;
* a comparison with no variable left (after collecting like terms) is
  decided on the spot: true drops the row, false drops the whole disjunct;
* an atom over inputs must be a single-variable bound ``a * X_i <= c``; an
  atom over outputs may be any linear row; mixing X and Y is rejected;
* the formula is expanded to disjunctive normal form; disjuncts with the same
  input box become one :class:`Property` with several clauses.

Variables must be declared before use (as in SMT-LIB), in any index order,
and the indices of each kind must be ``0 .. n-1`` without gaps.

Cost is linear in the file size.  The largest development files parse in
about 0.17 s (``lindex_7000.vnnlib``, 1.3 MB) and 0.55 s
(``cardinality_0_800_128.vnnlib.gz``, 7 MB unpacked) of CPU time, so there is
no on-disk cache of parsed specs: it would not pay for its invalidation rules.
"""
from __future__ import annotations

import gzip
import os

from vnnlib.dnf import DNF, Conjunction, SpecProblem, assemble, conjoin, disjoin
from vnnlib.errors import VnnlibError
from vnnlib.linear import Linear, Variable, add_comparison, difference_of, product_of, sum_of
from vnnlib.spec import Spec
from vnnlib.tokens import ATOM_LEFT, ATOM_RIGHT, COMPARISONS, PLAIN, TokenStream

_IGNORED_COMMANDS = ("check-sat", "get-model", "exit", "set-logic", "set-info", "set-option")
_MAX_NESTING = 400  # keeps the recursion well inside Python's default limit
# For ``X_i op c``: which bounds it sets (True = upper, False = lower).
_BOUND_SIDES = {"<=": (True,), "<": (True,), ">=": (False,), ">": (False,), "=": (True, False)}
_MIRROR = {"<=": ">=", "<": ">", ">=": "<=", ">": "<", "=": "="}

def _name(variable: Variable) -> str:
    return f"{'Y' if variable[0] else 'X'}_{variable[1]}"


def _several_inputs(inputs: list[Variable]) -> str:
    names = ", ".join(_name(v) for v in sorted(inputs))
    return f"general constraint over several inputs ({names}); expected single-variable bounds such as (<= X_0 1.0)"


class _Parser:
    """One pass over a :class:`TokenStream`; ``position`` is the next token."""

    def __init__(self, stream: TokenStream):
        self.stream = stream
        self.tokens = stream.tokens
        self.position = 0
        self.variables: dict[str, Variable] = {}
        self.declared_at: dict[Variable, int] = {}
        self.depth = 0

    # -- helpers ---------------------------------------------------------
    def fail(self, index: int, message: str, part: int = PLAIN) -> VnnlibError:
        return self.stream.error(index, message, part)

    def describe(self, index: int) -> str:
        if index >= len(self.tokens):
            return "end of file"
        token = self.tokens[index]
        if token[0]:
            return f"'({token[0]} {token[1]} {token[2]})'"
        return f"'{token[PLAIN]}'"

    def peek_plain(self) -> str:
        """The next token's text when it is a plain token, else ``''``."""
        if self.position < len(self.tokens):
            return self.tokens[self.position][PLAIN]
        return ""

    def symbol(self, what: str) -> str:
        """Consume a bare symbol (not a parenthesis, not a comparison atom)."""
        index = self.position
        text = self.peek_plain()
        if not text or text in "()":
            raise self.fail(index, f"expected {what}, found {self.describe(index)}")
        self.position += 1
        return text

    def close(self, opened: int, what: str) -> None:
        """Consume the ``)`` matching the ``(`` at token ``opened``."""
        index = self.position
        if index >= len(self.tokens):
            raise self.fail(opened, f"unbalanced parentheses: this '(' of {what} is never closed")
        if self.tokens[index][PLAIN] != ")":
            where = self.stream.location(self.stream.offset(opened)).split(":", 1)[-1]
            raise self.fail(index, f"expected ')' to close {what} opened at {where}, "
                                   f"found {self.describe(index)}")
        self.position += 1

    def enter(self, index: int) -> None:
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.fail(index, f"expressions nested deeper than {_MAX_NESTING} levels")

    # -- commands --------------------------------------------------------
    def parse(self) -> Spec:
        asserts: list[DNF] = []
        first_assert = -1
        tokens = self.tokens
        while self.position < len(tokens):
            opened = self.position
            token = tokens[opened]
            if token[PLAIN] != "(":
                if token[PLAIN] == ")":
                    raise self.fail(opened, "unbalanced parentheses: unexpected ')'")
                raise self.fail(opened, f"expected '(' to start a command, found {self.describe(opened)}")
            self.position += 1
            command = self.symbol("a command such as declare-const or assert")
            if command == "declare-const":
                self.declaration(opened)
            elif command == "assert":
                first_assert = opened if first_assert < 0 else first_assert
                asserts.append(self.formula())
                self.close(opened, "assert")
            elif command in _IGNORED_COMMANDS:
                self.skip_to_close(opened, command)
            else:
                raise self.fail(opened + 1, f"unknown command '{command}'; expected declare-const "
                                            f"or assert (or one of {', '.join(_IGNORED_COMMANDS)})")
        if first_assert < 0:
            raise self.fail(len(tokens), "no (assert ...) found; expected at least one assertion")
        num_inputs = self.count_declared(False)
        num_outputs = self.count_declared(True)
        disjuncts = conjoin(asserts, lambda message: self.fail(first_assert, message))
        try:
            properties = assemble(disjuncts, num_inputs, num_outputs)
        except SpecProblem as problem:
            index = problem.token if problem.token is not None else \
                self.declared_at[(False, problem.variable)]
            raise self.fail(index, problem.message) from None
        return Spec(properties=properties, num_inputs=num_inputs, num_outputs=num_outputs,
                    source=self.stream.source)

    def declaration(self, opened: int) -> None:
        index = self.position
        name = self.symbol("a variable name")
        kind, _, digits = name.partition("_")
        if kind not in ("X", "Y") or not digits.isdigit() or (digits != "0" and digits[0] == "0"):
            raise self.fail(index, f"bad variable name '{name}'; expected X_<i> (input) or Y_<j> (output)")
        variable = (kind == "Y", int(digits))
        if name in self.variables:
            raise self.fail(index, f"variable {name} is declared twice")
        sort_index = self.position
        sort = self.symbol("the sort Real")
        if sort != "Real":
            raise self.fail(sort_index, f"unsupported sort '{sort}' for {name}; expected Real")
        self.close(opened, "declare-const")
        self.variables[name] = variable
        self.declared_at[variable] = index

    def skip_to_close(self, opened: int, command: str) -> None:
        depth = 1
        tokens = self.tokens
        while self.position < len(tokens):
            text = tokens[self.position][PLAIN]
            self.position += 1
            depth += (text == "(") - (text == ")")
            if depth == 0:
                return
        raise self.fail(opened, f"unbalanced parentheses: this '(' of {command} is never closed")

    def count_declared(self, is_output: bool) -> int:
        indices = sorted(i for out, i in self.declared_at if out == is_output)
        kind = "Y" if is_output else "X"
        if not indices:
            raise self.fail(len(self.tokens), f"no {kind}_<i> variable declared; expected "
                                              f"(declare-const {kind}_0 Real) and following")
        for expected, index in enumerate(indices):
            if index != expected:
                last = self.declared_at[(is_output, indices[-1])]
                raise self.fail(last, f"{kind}_{indices[-1]} is declared but {kind}_{expected} is not; "
                                      f"expected {kind}_0 .. {kind}_{indices[-1]} all declared")
        return len(indices)

    # -- formulas --------------------------------------------------------
    def formula(self) -> DNF:
        index = self.position
        if index >= len(self.tokens):
            raise self.fail(index, "unexpected end of file: expected a formula")
        token = self.tokens[index]
        self.position += 1
        if token[0]:
            return self.simple_atom(index, token)
        text = token[PLAIN]
        if text == "true":
            return [Conjunction()]
        if text == "false":
            return []
        if text != "(":
            raise self.fail(index, f"expected a formula: (and ...), (or ...) or a comparison, "
                                   f"found {self.describe(index)}")
        self.enter(index)
        head_index = self.position
        head = self.symbol("'and', 'or' or a comparison operator")
        if head == "and":
            result = self.conjunction(index, head_index)
        elif head == "or":
            children = []
            while self.peek_plain() != ")" and self.position < len(self.tokens):
                children.append(self.formula())
            self.close(index, "'or'")
            result = disjoin(children, lambda message: self.fail(head_index, message))
        elif head in COMPARISONS:
            left, right = self.term(), self.term()
            if self.peek_plain() != ")" and self.position < len(self.tokens):
                raise self.fail(self.position, f"comparison '{head}' takes exactly two operands, "
                                               f"found another: {self.describe(self.position)}")
            self.close(index, f"'{head}'")
            conjunction = Conjunction()
            result = [conjunction] if self.add_atom(conjunction, index, head, left, right) else []
        else:
            raise self.fail(head_index, f"unknown operator '{head}' in a formula; expected and, or, "
                                        f"<=, >=, <, >, =")
        self.depth -= 1
        return result

    def conjunction(self, opened: int, head_index: int) -> DNF:
        """The children of ``(and ...)``, up to its ``)``.

        Simple atoms go straight into one shared conjunction (the inner loop
        of files with large boxes); nested formulas are distributed after.
        """
        tokens = self.tokens
        count = len(tokens)
        base = Conjunction()
        satisfiable = True
        children: list[DNF] = []
        while self.position < count:
            index = self.position
            token = tokens[index]
            if token[0]:
                self.position = index + 1
                satisfiable = self.add_simple_atom(base, index, token) and satisfiable
            elif token[PLAIN] == ")":
                break
            else:
                children.append(self.formula())
        self.close(opened, "'and'")
        if not satisfiable:
            return []
        if not children:
            return [base]
        children.insert(0, [base])
        return conjoin(children, lambda message: self.fail(head_index, message))

    def leaf(self, text: str, index: int, part: int = PLAIN) -> Variable | float:
        """A declared variable or a finite number."""
        variable = self.variables.get(text)
        if variable is not None:
            return variable
        try:
            value = float(text)
        except ValueError:
            if text[0].isalpha() or text[0] == "_":
                raise self.fail(index, f"undeclared variable '{text}'; expected "
                                       f"(declare-const {text} Real) before its use", part) from None
            raise self.fail(index, f"bad number '{text}'", part) from None
        if "_" in text or value - value != 0.0:  # float() accepts 1_0, nan, inf
            raise self.fail(index, f"bad number '{text}'; expected a finite decimal number", part)
        return value

    def simple_atom(self, index: int, token: tuple[str, str, str, str]) -> DNF:
        """``(op a b)`` with plain operands, as a one-disjunct formula."""
        conjunction = Conjunction()
        return [conjunction] if self.add_simple_atom(conjunction, index, token) else []

    def add_simple_atom(self, conjunction: Conjunction, index: int,
                        token: tuple[str, str, str, str]) -> bool:
        """Add ``(op a b)`` to ``conjunction``; False if it is constant-false.

        The hot path of big files: an input bound ``(op X_i c)`` or
        ``(op c X_i)`` is appended without building a :class:`Linear`.
        """
        op = token[0]
        left = self.variables.get(token[1])
        if left is None:
            left = self.leaf(token[1], index, ATOM_LEFT)
        right = self.variables.get(token[2])
        if right is None:
            right = self.leaf(token[2], index, ATOM_RIGHT)
        if type(right) is float and type(left) is tuple and not left[0]:
            for is_upper in _BOUND_SIDES[op]:
                conjunction.inputs.append((left[1], is_upper, right, index))
            return True
        if type(left) is float and type(right) is tuple and not right[0]:
            for is_upper in _BOUND_SIDES[_MIRROR[op]]:
                conjunction.inputs.append((right[1], is_upper, left, index))
            return True
        # Output rows ``Y_j op c``, ``c op Y_j`` and ``Y_a op Y_b`` (a != b),
        # written as ``terms <= bound`` for the '<=' direction.
        terms = None
        if type(left) is tuple and left[0]:
            if type(right) is float:
                terms, bound = ((left[1], 1.0),), right
            elif right[0] and right[1] != left[1]:
                terms, bound = tuple(sorted(((left[1], 1.0), (right[1], -1.0)))), 0.0
        elif type(left) is float and type(right) is tuple and right[0]:
            terms, bound = ((right[1], -1.0),), 0.0 - left
        if terms is not None:
            for is_upper in _BOUND_SIDES[op]:
                if is_upper:
                    conjunction.outputs.append((terms, bound))
                else:
                    conjunction.outputs.append((tuple((j, -c) for j, c in terms), 0.0 - bound))
            return True
        return self.add_atom(conjunction, index, op, self.as_linear(left), self.as_linear(right))

    @staticmethod
    def as_linear(leaf: Variable | float) -> Linear:
        if type(leaf) is float:
            return Linear({}, leaf)
        return Linear({leaf: 1.0}, 0.0)

    def add_atom(self, conjunction: Conjunction, index: int, op: str,
                 left: Linear, right: Linear) -> bool:
        """Add ``left op right`` to ``conjunction`` as rows ``sum(c * v) <= d``.

        Returns False when a row is constant-false (the disjunct is empty).
        """
        return add_comparison(
            conjunction, index, _BOUND_SIDES[op], left, right, lambda message: self.fail(index, message),
            "constraint mixes inputs (X) and outputs (Y); expected input bounds and output constraints "
            "in separate atoms",
            _several_inputs)

    # -- terms -----------------------------------------------------------
    def term(self) -> Linear:
        index = self.position
        if index >= len(self.tokens):
            raise self.fail(index, "unexpected end of file: expected a term")
        token = self.tokens[index]
        text = token[PLAIN]
        if token[0] or text == ")":
            raise self.fail(index, f"expected a number, a variable or (+ - * / ...), "
                                   f"found {self.describe(index)}")
        self.position += 1
        if text != "(":
            return self.as_linear(self.leaf(text, index))
        self.enter(index)
        head_index = self.position
        head = self.symbol("an arithmetic operator + - * /")
        if head not in ("+", "-", "*", "/"):
            raise self.fail(head_index, f"unknown arithmetic operator '{head}'; expected + - * /")
        operands = []
        while self.peek_plain() != ")" and self.position < len(self.tokens):
            operands.append((self.position, self.term()))
        self.close(index, f"'{head}'")
        self.depth -= 1
        if not operands:
            raise self.fail(index, f"'{head}' needs at least one operand")
        if head == "+":
            result = sum_of(operands)
        elif head == "-":
            result = difference_of(operands)
        elif head == "*":
            result = product_of(operands, self.fail, "non-linear term: product of two expressions "
                                                     "with variables; expected (* constant variable)")
        else:
            result = operands[0][1]
            for operand_index, operand in operands[1:]:
                if operand.coefficients or operand.constant == 0.0:
                    raise self.fail(operand_index, "division only by a non-zero constant is linear")
                result = result.scaled(1.0 / operand.constant)
        return result


def parse_vnnlib_string(text: str, source: str = "<string>") -> Spec:
    """Parse VNN-LIB ``text``; ``source`` names it in error messages."""
    return _Parser(TokenStream(text, source)).parse()


def read_vnnlib_text(path: str | os.PathLike) -> str:
    """The text of a ``.vnnlib`` file, decompressing gzip when present."""
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise VnnlibError(f"{os.fspath(path)}:1:1: corrupt gzip data ({exc})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VnnlibError(f"{os.fspath(path)}:1:1: not UTF-8 text (byte {exc.start})") from None


def parse_vnnlib(path: str | os.PathLike) -> Spec:
    """Parse a ``.vnnlib`` (or gzip-compressed ``.vnnlib.gz``) file."""
    return parse_vnnlib_string(read_vnnlib_text(path), source=os.fspath(path))

