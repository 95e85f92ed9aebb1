"""A restricted evaluator for the expressions of data configs (variables, selections, labels).

Expressions are parsed with :mod:`ast` and walked node by node; nothing is passed to ``eval``.
Allowed: numbers and booleans, names of branches or other variables, arithmetic
(``+ - * / // % **``), comparisons, ``& | ^ ~`` on boolean arrays, ``and``/``or``/``not``
(applied element-wise), and calls of the whitelisted functions in :data:`FUNCTIONS` with
positional arguments and constant keyword arguments (``ak.sum(x, axis=1)``). Everything else
(attribute access beyond ``np.<name>``/``ak.<name>``, subscripts, lambdas, comprehensions,
strings, calls outside the whitelist) is rejected with an error naming the config key.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable

import awkward as ak
import numpy as np

from hepnn.data.jagged import FlatJagged, as_awkward
from hepnn.errors import ConfigError

FUNCTIONS: dict[str, Callable] = {
    **{
        f"np.{name}": getattr(np, name)
        for name in (
            "abs",
            "absolute",
            "sqrt",
            "square",
            "exp",
            "log",
            "log10",
            "log2",
            "log1p",
            "expm1",
            "sin",
            "cos",
            "tan",
            "arcsin",
            "arccos",
            "arctan",
            "arctan2",
            "sinh",
            "cosh",
            "tanh",
            "arcsinh",
            "arccosh",
            "arctanh",
            "hypot",
            "minimum",
            "maximum",
            "clip",
            "where",
            "sign",
            "floor",
            "ceil",
            "round",
            "isfinite",
            "isnan",
            "logical_and",
            "logical_or",
            "logical_not",
        )
    },
    **{
        f"ak.{name}": getattr(ak, name)
        for name in (
            "num",
            "sum",
            "mean",
            "max",
            "min",
            "argmax",
            "argmin",
            "firsts",
            "fill_none",
            "ones_like",
            "zeros_like",
            "full_like",
            "values_astype",
            "any",
            "all",
            "count",
            "count_nonzero",
            "prod",
        )
    },
}
CONSTANTS: dict[str, float] = {"np.pi": np.pi, "np.e": np.e, "np.inf": np.inf}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Invert: operator.invert,
    ast.Not: np.logical_not,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_BOOL = {ast.And: np.logical_and, ast.Or: np.logical_or}


class ExpressionError(ConfigError):
    """An expression in a data config is malformed, not allowed, or refers to an unknown name."""


def _dotted(node: ast.AST) -> str | None:
    """``np.log`` for an Attribute chain of plain names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


class Expression:
    """A validated expression; ``names`` are the branches or variables it reads.

    ``where`` names the config key the text came from, for error messages.
    """

    def __init__(self, text: str, where: str):
        self.text = str(text)
        self.where = where
        try:
            self._tree = ast.parse(self.text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"{where}: cannot parse expression {self.text!r}: {exc.msg}") from None
        names: set[str] = set()
        self._check(self._tree.body, names)
        self.names = frozenset(names)

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"

    def _fail(self, why: str):
        raise ExpressionError(f"{self.where}: expression {self.text!r} is not allowed: {why}")

    def _check(self, node: ast.AST, names: set[str]) -> None:
        match node:
            case ast.Constant(value=value):
                if isinstance(value, bool | int | float):
                    return
                self._fail(f"constant {value!r} (only numbers and booleans)")
            case ast.Name(id=name):
                if name.startswith("_"):
                    self._fail(f"name {name!r} (names starting with '_' are reserved)")
                if name in ("np", "ak", "numpy", "awkward"):
                    self._fail(f"bare module name {name!r}")
                names.add(name)
            case ast.Attribute():
                dotted = _dotted(node)
                if dotted not in CONSTANTS:
                    self._fail(
                        f"attribute access {dotted or ast.unparse(node)!r}; allowed constants: "
                        f"{', '.join(sorted(CONSTANTS))}"
                    )
            case ast.BinOp(left=left, op=op, right=right):
                if type(op) not in _BINARY:
                    self._fail(f"operator {type(op).__name__}")
                self._check(left, names)
                self._check(right, names)
            case ast.UnaryOp(op=op, operand=operand):
                self._check(operand, names)
            case ast.BoolOp(values=values):
                for value in values:
                    self._check(value, names)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                for op in ops:
                    if type(op) not in _COMPARE:
                        self._fail(f"comparison {type(op).__name__}")
                for value in (left, *comparators):
                    self._check(value, names)
            case ast.Call(func=func, args=args, keywords=keywords):
                dotted = _dotted(func)
                if dotted not in FUNCTIONS:
                    self._fail(
                        f"call of {dotted or ast.unparse(func)!r}; allowed functions: "
                        f"{', '.join(sorted(FUNCTIONS))}"
                    )
                for arg in args:
                    if isinstance(arg, ast.Starred):
                        self._fail("starred arguments")
                    self._check(arg, names)
                for keyword in keywords:
                    if keyword.arg is None or not isinstance(keyword.value, ast.Constant | ast.UnaryOp):
                        self._fail(f"keyword argument {ast.unparse(keyword)!r} (only name=constant)")
                    self._check(keyword.value, names)
            case _:
                self._fail(f"{type(node).__name__} ({ast.unparse(node)!r})")

    def evaluate(self, lookup: Callable[[str], object]):
        """Value of the expression; ``lookup(name)`` provides each branch or variable."""
        return self._eval(self._tree.body, lookup)

    def _eval(self, node: ast.AST, lookup):
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                return lookup(name)
            case ast.Attribute():
                return CONSTANTS[_dotted(node)]
            case ast.BinOp(left=left, op=op, right=right):
                return _BINARY[type(op)](self._eval(left, lookup), self._eval(right, lookup))
            case ast.UnaryOp(op=op, operand=operand):
                return _UNARY[type(op)](self._eval(operand, lookup))
            case ast.BoolOp(op=op, values=values):
                result = self._eval(values[0], lookup)
                for value in values[1:]:
                    result = _BOOL[type(op)](result, self._eval(value, lookup))
                return result
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                result, current = None, self._eval(left, lookup)
                for op, comparator in zip(ops, comparators, strict=True):
                    right = self._eval(comparator, lookup)
                    term = _COMPARE[type(op)](current, right)
                    result = term if result is None else np.logical_and(result, term)
                    current = right
                return result
            case ast.Call(func=func, args=args, keywords=keywords):
                name = _dotted(func)
                fn = FUNCTIONS[name]
                kwargs = {k.arg: self._eval(k.value, lookup) for k in keywords}
                values = [self._eval(a, lookup) for a in args]
                if name.startswith("ak."):
                    values = [as_awkward(v) for v in values]
                return fn(*values, **kwargs)
        raise AssertionError(f"unchecked node {type(node).__name__}")  # _check rejects everything else


class VariableResolver:
    """Looks up branches of a chunk and evaluates derived variables on demand, once each.

    ``arrays`` is the chunk read from ROOT (an awkward record array of branches);
    ``variables`` maps variable names to :class:`Expression` objects that may use each other.
    Branches come out as numpy arrays (one number per entry) or :class:`FlatJagged` arrays
    (a list of numbers per entry; branches of one collection share one offsets array), and as
    awkward arrays otherwise.
    """

    def __init__(self, arrays: ak.Array, variables: dict[str, Expression]):
        self._arrays = arrays
        self._fields = set(arrays.fields)
        self._variables = variables
        self._values: dict[str, object] = {}
        self._evaluating: list[str] = []
        self._offsets: list[tuple[np.ndarray, dict]] = []

    def _branch(self, name: str):
        value = self._arrays[name]
        if value.ndim == 1:
            try:
                return ak.to_numpy(value)
            except ValueError:  # missing values or records: keep it awkward
                return value
        flat = FlatJagged.from_awkward(value)
        if flat is None:
            return value
        for offsets, repeats in self._offsets:
            if offsets is flat.offsets or np.array_equal(offsets, flat.offsets):
                return FlatJagged(flat.content, offsets, repeats)
        self._offsets.append((flat.offsets, {}))
        return FlatJagged(flat.content, *self._offsets[-1])

    def __call__(self, name: str):
        if name in self._values:
            return self._values[name]
        if name in self._variables:
            if name in self._evaluating:
                cycle = " -> ".join([*self._evaluating[self._evaluating.index(name) :], name])
                raise ExpressionError(
                    f"{self._variables[name].where}: variables depend on each other in a cycle: {cycle}"
                )
            self._evaluating.append(name)
            try:
                value = self._variables[name].evaluate(self)
            finally:
                self._evaluating.pop()
        elif name in self._fields:
            value = self._branch(name)
        else:
            raise ExpressionError(f"'{name}' is neither a branch that was read nor a defined variable")
        self._values[name] = value
        return value


def required_branches(names: set[str], variables: dict[str, Expression]) -> set[str]:
    """Branches needed to compute ``names``, following variable definitions recursively."""
    branches: set[str] = set()
    seen: set[str] = set()
    stack = list(names)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in variables:
            stack.extend(variables[name].names)
        else:
            branches.add(name)
    return branches
