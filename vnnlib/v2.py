"""VNN-LIB 2.0 queries -> the normalized :class:`~vnnlib.spec.Spec`.

The 2.0 standard (VNNLIB-Standard, LBNF grammar ``grammar.cf``) declares
typed, shaped tensors inside network declarations and indexes them::

    (vnnlib-version <2.0>)
    (declare-network acas
        (declare-input  X Real [1,5])
        (declare-output Y float32 [1,5]))
    (assert (<= X[0,0] 0.6))
    (assert (or (<= Y[0,0] Y[0,1]) (>= Y[0,2] 3.0)))

Grammar handled here (whitespace-insensitive; ``;`` starts a comment)::

    query     := (vnnlib-version <M.m>) network+ assertion+
    network   := (declare-network NAME [(equal-to N) | (isomorphic-to N)]
                   (declare-input NAME TYPE SHAPE ["onnx"])+
                   (declare-output NAME TYPE SHAPE ["onnx"])+)
    SHAPE     := [] | [d0, d1, ...]
    assertion := (assert bool)
    bool      := (and bool+) | (or bool+) | (OP arith arith)
                 OP in <= >= < > = == (!= is rejected, see below)
    arith     := NUMBER | NAME | NAME[i0, i1, ...]
                 | (- a) | (- a b ...) | (+ a ...) | (* a ...)

Mapping onto ``Spec`` (same semantics as the 1.0 parser):

* every declared input tensor, in declaration order (networks in order), is
  flattened row-major and concatenated: ``X[0,2]`` of a ``[1,10]`` input is
  flat input 2; outputs likewise.  So a single-network, single-input query is
  exactly the 1.0 file with ``X_i`` the flat index;
* strict comparisons are read as non-strict (the unsafe set grows by its
  boundary: ``unsat`` stays sound); ``=``/``==`` is two rows;
* an atom over inputs must be a single-variable bound; mixing inputs and
  outputs in one atom is rejected (``Spec`` cannot hold it);
* ``!=`` is a disjunction of two *strict* inequalities whose closure is the
  whole line: it cannot be represented soundly and is rejected;
* ``declare-hidden`` (constraints on hidden nodes) is rejected.

Scoping rules of the standard are checked: declare before use, unique names,
indices within the declared shape, number of indices equal to the rank.
Errors are :class:`~vnnlib.errors.VnnlibError` with line and column.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field

from vnnlib.dnf import DNF, Conjunction, SpecProblem, assemble, conjoin, disjoin
from vnnlib.errors import VnnlibError
from vnnlib.linear import Linear, add_comparison, difference_of, product_of, sum_of
from vnnlib.spec import Spec

SUPPORTED_VERSIONS = ("2.0",)
ELEMENT_TYPES = ("Real", "real", "float64", "float32", "float16", "bfloat16", "double", "float")
_COMPARISONS = {"<=": (True,), "<": (True,), ">=": (False,), ">": (False,), "=": (True, False),
                "==": (True, False)}
_TOKEN = re.compile(r'\s+|;[^\n]*|(?P<tok>\(|\)|\[|\]|,|"[^"]*"|<\d+\.\d+>|[^\s()\[\],;"]+)')
_MAX_NESTING = 400


@dataclass
class TensorDecl:
    """One declared tensor: ``kind`` is "input" or "output"; ``offset`` is its
    first flat index among all inputs (or outputs) of the query."""

    name: str
    kind: str
    element_type: str
    shape: tuple[int, ...]
    onnx_name: str | None
    network: str
    offset: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class NetworkDecl:
    name: str
    inputs: list[TensorDecl] = field(default_factory=list)
    outputs: list[TensorDecl] = field(default_factory=list)
    equal_to: str | None = None
    isomorphic_to: str | None = None


@dataclass
class Query:
    """A parsed 2.0 query: its declarations and the normalized spec over the
    concatenated inputs/outputs (see the module docstring)."""

    version: str
    networks: list[NetworkDecl]
    spec: Spec

    def tensors(self) -> list[TensorDecl]:
        """Every declared tensor in declaration order (for assignment output)."""
        return [t for n in self.networks for t in (*n.inputs, *n.outputs)]


class _Parser:
    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.tokens: list[tuple[str, int]] = []
        position = 0
        while position < len(text):
            match = _TOKEN.match(text, position)
            if match is None:  # an unterminated string
                raise self.error_at(position, "unterminated string literal")
            if match.group("tok") is not None:
                self.tokens.append((match.group("tok"), position))
            position = match.end()
        self.index = 0
        self.depth = 0
        self.tensors: dict[str, TensorDecl] = {}
        self.networks: list[NetworkDecl] = []
        self.num_inputs = 0
        self.num_outputs = 0

    # -- helpers ------------------------------------------------------------
    def error_at(self, offset: int, message: str) -> VnnlibError:
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        return VnnlibError(f"{self.source}:{line}:{column}: {message}")

    def error(self, message: str, index: int | None = None) -> VnnlibError:
        index = self.index if index is None else index
        offset = self.tokens[index][1] if index < len(self.tokens) else len(self.text)
        return self.error_at(offset, message)

    def peek(self) -> str:
        return self.tokens[self.index][0] if self.index < len(self.tokens) else ""

    def take(self, what: str) -> str:
        if self.index >= len(self.tokens):
            raise self.error(f"unexpected end of file: expected {what}")
        text = self.tokens[self.index][0]
        self.index += 1
        return text

    def expect(self, literal: str, what: str | None = None) -> None:
        found = self.peek()
        if found != literal:
            raise self.error(f"expected {what or repr(literal)}, found {found!r}" if found
                             else f"unexpected end of file: expected {what or repr(literal)}")
        self.index += 1

    def name(self, what: str) -> str:
        index = self.index
        text = self.take(what)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", text):
            raise self.error(f"expected {what}, found {text!r}", index)
        return text

    def integers(self) -> tuple[int, ...]:
        """``[i, j, ...]`` (commas or spaces between); ``[]`` is the scalar shape."""
        self.expect("[")
        values = []
        while self.peek() != "]":
            index = self.index
            text = self.take("an integer or ']'")
            if text == ",":
                continue
            if not text.isdigit():
                raise self.error(f"expected a non-negative integer, found {text!r}", index)
            values.append(int(text))
        self.index += 1
        return tuple(values)

    # -- top level -----------------------------------------------------------
    def parse(self) -> Query:
        self.expect("(", "'(vnnlib-version <2.0>)'")
        head = self.index
        if self.take("vnnlib-version") != "vnnlib-version":
            raise self.error("a VNN-LIB 2.0 query starts with (vnnlib-version <2.0>)", head)
        version_index = self.index
        version = self.take("a version such as <2.0>")
        if not re.fullmatch(r"<\d+\.\d+>", version) or version[1:-1] not in SUPPORTED_VERSIONS:
            raise self.error(f"unsupported version {version}; supported: "
                             + ", ".join(f"<{v}>" for v in SUPPORTED_VERSIONS), version_index)
        self.expect(")")
        asserts: list[DNF] = []
        first_assert = None
        while self.index < len(self.tokens):
            opened = self.index
            self.expect("(", "'(declare-network ...)' or '(assert ...)'")
            command_index = self.index
            command = self.take("a command")
            if command == "declare-network":
                if asserts:
                    raise self.error("network declarations must come before the assertions", command_index)
                self.network()
            elif command == "assert":
                first_assert = opened if first_assert is None else first_assert
                asserts.append(self.formula())
                self.expect(")", "')' to close assert")
            else:
                raise self.error(f"unknown command {command!r}; expected declare-network or assert",
                                 command_index)
        if not self.networks:
            raise self.error("no (declare-network ...) found")
        if not asserts:
            raise self.error("no (assert ...) found; expected at least one assertion")
        disjuncts = conjoin(asserts, lambda message: self.error(message, first_assert))
        try:
            properties = assemble(disjuncts, self.num_inputs, self.num_outputs)
        except SpecProblem as problem:
            if problem.variable is not None:
                problem.message = problem.message.replace(f"X_{problem.variable}",
                                                          self.input_label(problem.variable))
            raise self.error(problem.message, problem.token if problem.token is not None else first_assert) from None
        spec = Spec(properties=properties, num_inputs=self.num_inputs, num_outputs=self.num_outputs,
                    source=self.source, meta={"vnnlib_version": version[1:-1]})
        return Query(version=version[1:-1], networks=self.networks, spec=spec)

    def input_label(self, flat: int) -> str:
        for tensor in self.tensors.values():
            if tensor.kind == "input" and tensor.offset <= flat < tensor.offset + tensor.numel:
                rest, index = flat - tensor.offset, []
                for size in reversed(tensor.shape):
                    index.append(rest % size)
                    rest //= size
                return f"{tensor.name}[{','.join(map(str, reversed(index)))}]"
        return f"input {flat}"

    def network(self) -> None:
        name_index = self.index
        network = NetworkDecl(self.name("a network name"))
        if any(n.name == network.name for n in self.networks) or network.name in self.tensors:
            raise self.error(f"name {network.name!r} is declared twice", name_index)
        stage = 0  # 0: equivalences, 1: inputs, 2: outputs
        while self.peek() == "(":
            self.index += 1
            kind_index = self.index
            kind = self.take("a declaration")
            if kind in ("equal-to", "isomorphic-to"):
                if stage > 0 or network.equal_to or network.isomorphic_to:
                    raise self.error(f"({kind} ...) must come first, once", kind_index)
                target_index = self.index
                target = self.name("a network name")
                if not any(n.name == target for n in self.networks):
                    raise self.error(f"undeclared network {target!r}", target_index)
                setattr(network, kind.replace("-to", "_to"), target)
            elif kind == "declare-hidden":
                raise self.error("declare-hidden (constraints on hidden nodes) is not supported", kind_index)
            elif kind in ("declare-input", "declare-output"):
                is_output = kind == "declare-output"
                if stage > (2 if is_output else 1):
                    raise self.error("inputs must be declared before outputs", kind_index)
                stage = 2 if is_output else 1
                network_tensors = network.outputs if is_output else network.inputs
                network_tensors.append(self.tensor("output" if is_output else "input", network.name))
            else:
                raise self.error(f"unknown declaration {kind!r}; expected declare-input, declare-output, "
                                 "equal-to or isomorphic-to", kind_index)
            self.expect(")", f"')' to close {kind}")
        self.expect(")", "')' to close declare-network")
        if not network.inputs or not network.outputs:
            raise self.error(f"network {network.name!r} needs at least one input and one output", name_index)
        self.networks.append(network)

    def tensor(self, kind: str, network: str) -> TensorDecl:
        name_index = self.index
        name = self.name(f"an {kind} variable name")
        if name in self.tensors or any(n.name == name for n in self.networks) or name == network:
            raise self.error(f"name {name!r} is declared twice", name_index)
        type_index = self.index
        element_type = self.take("an element type")
        if element_type not in ELEMENT_TYPES:
            raise self.error(f"unsupported element type {element_type!r}; supported: "
                             + ", ".join(ELEMENT_TYPES), type_index)
        shape = self.integers()
        onnx_name = None
        if self.peek().startswith('"'):
            onnx_name = self.take("an ONNX name")[1:-1]
        offset = self.num_outputs if kind == "output" else self.num_inputs
        tensor = TensorDecl(name, kind, element_type, shape, onnx_name, network, offset)
        if kind == "output":
            self.num_outputs += tensor.numel
        else:
            self.num_inputs += tensor.numel
        self.tensors[name] = tensor
        return tensor

    # -- formulas ------------------------------------------------------------
    def formula(self) -> DNF:
        opened = self.index
        self.expect("(", "a formula: (and ...), (or ...) or a comparison")
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise self.error(f"expressions nested deeper than {_MAX_NESTING} levels", opened)
        head_index = self.index
        head = self.take("'and', 'or' or a comparison")
        if head in ("and", "or"):
            children = []
            while self.peek() not in (")", ""):
                children.append(self.formula())
            if not children:
                raise self.error(f"'{head}' needs at least one operand", head_index)
            fail = lambda message: self.error(message, head_index)  # noqa: E731
            result = conjoin(children, fail) if head == "and" else disjoin(children, fail)
        elif head in _COMPARISONS:
            left, right = self.term(), self.term()
            conjunction = Conjunction()
            result = [conjunction] if self.atom(conjunction, head_index, head, left, right) else []
        elif head == "!=":
            raise self.error("'!=' is a union of strict inequalities that cannot be represented "
                             "soundly; write the two sides with 'or'", head_index)
        else:
            raise self.error(f"unknown operator {head!r} in a formula; expected and, or, <=, >=, <, >, ==",
                             head_index)
        self.expect(")", f"')' to close '{head}'")
        self.depth -= 1
        return result

    def atom(self, conjunction: Conjunction, index: int, op: str, left: Linear, right: Linear) -> bool:
        """Add ``left op right`` as rows ``sum(c v) <= d``; False when constant-false."""
        return add_comparison(
            conjunction, index, _COMPARISONS[op], left, right, lambda message: self.error(message, index),
            "constraint mixes network inputs and outputs; expected input bounds and output constraints "
            "in separate comparisons",
            lambda inputs: "general constraint over several inputs; expected single-element bounds "
                           "such as (<= X[0,1] 1.0)")

    def term(self) -> Linear:
        index = self.index
        text = self.take("a number, a tensor element or (+ - * ...)")
        if text == "(":
            self.depth += 1
            head_index = self.index
            head = self.take("an arithmetic operator + - *")
            if head not in ("+", "-", "*"):
                raise self.error(f"unknown arithmetic operator {head!r}; expected + - *", head_index)
            operands = []
            while self.peek() not in (")", ""):
                operands.append((self.index, self.term()))
            self.expect(")", f"')' to close '{head}'")
            self.depth -= 1
            if not operands:
                raise self.error(f"'{head}' needs at least one operand", head_index)
            if head == "-":
                return difference_of(operands)
            if head == "+":
                return sum_of(operands)
            return product_of(operands, lambda at, message: self.error(message, at),
                              "non-linear term: product of two expressions with variables")
        if text in (")", "[", "]", ","):
            raise self.error(f"expected a number or a tensor element, found {text!r}", index)
        if text[0].isalpha():
            return self.element(text, index)
        try:
            value = float(text)
        except ValueError:
            raise self.error(f"bad number {text!r}", index) from None
        if "_" in text or not math.isfinite(value):
            raise self.error(f"bad number {text!r}; expected a finite decimal number", index)
        return Linear({}, value)

    def element(self, name: str, index: int) -> Linear:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise self.error(f"undeclared variable {name!r}", index)
        indices = self.integers() if self.peek() == "[" else ()
        if len(indices) != len(tensor.shape):
            raise self.error(f"{name} has rank {len(tensor.shape)} (shape {list(tensor.shape)}) but "
                             f"{len(indices)} indices were given", index)
        flat = 0
        for position, size in zip(indices, tensor.shape):
            if position >= size:
                raise self.error(f"index {list(indices)} out of range for {name} of shape {list(tensor.shape)}",
                                 index)
            flat = flat * size + position
        return Linear({(tensor.kind == "output", tensor.offset + flat): 1.0}, 0.0)


def is_v2(text: str) -> bool:
    """True when the text starts (after comments/whitespace) with ``(vnnlib-version``."""
    stripped = re.sub(r";[^\n]*", "", text[:4096]).lstrip()
    return bool(re.match(r"\(\s*vnnlib-version\b", stripped))


def parse_query_string(text: str, source: str = "<string>") -> Query:
    """Parse a VNN-LIB 2.0 query (declarations and spec)."""
    return _Parser(text, source).parse()


def parse_query(path: str | os.PathLike) -> Query:
    """Parse a VNN-LIB 2.0 query file (``.gz`` accepted)."""
    from vnnlib.parser import read_vnnlib_text

    return parse_query_string(read_vnnlib_text(path), os.fspath(path))


def parse_v2_string(text: str, source: str = "<string>") -> Spec:
    """The normalized :class:`Spec` of a 2.0 query."""
    return parse_query_string(text, source).spec


def parse_any(path: str | os.PathLike) -> Spec:
    """Parse a VNN-LIB file of either version (2.0 when it has a version header)."""
    from vnnlib.parser import parse_vnnlib_string, read_vnnlib_text

    text = read_vnnlib_text(path)
    if is_v2(text):
        return parse_v2_string(text, os.fspath(path))
    return parse_vnnlib_string(text, os.fspath(path))
