"""The restricted expression evaluator: what it computes and what it refuses to run."""

import awkward as ak
import numpy as np
import pytest

from hepnn.data.expressions import Expression, ExpressionError, VariableResolver, required_branches
from hepnn.data.jagged import as_awkward


def test_arithmetic_functions_and_names():
    arrays = ak.Array({"part_px": [[3.0, 0.0], [1.0]], "part_py": [[4.0, 2.0], [0.0]], "jet_pt": [10.0, 2.0]})
    expression = Expression("np.log(np.hypot(part_px, part_py) / jet_pt)", "data.variables.x")
    assert expression.names == {"part_px", "part_py", "jet_pt"}
    result = as_awkward(expression.evaluate(VariableResolver(arrays, {})))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(result)), np.log([0.5, 0.2, 0.5]))
    assert ak.num(result).tolist() == [2, 1]


@pytest.mark.parametrize(
    "text",
    [
        "np.log(np.hypot(px, py) / jet_pt) * 2 - 1",
        "np.where(px > 1, px, -py)",
        "ak.sum(px * py, axis=1) / jet_pt",
        "(px > 0.5) & (py < 3)",
        "px / ak.firsts(py)",
        "np.arctan2(py, px) + other",
    ],
)
def test_flat_jagged_fast_path_agrees_with_awkward(text):
    """Expressions on the flat fast path give exactly what plain awkward arrays give."""
    arrays = ak.Array(
        {
            "px": [[3.0, 0.0, 1.5], [], [1.0, 2.0]],
            "py": [[4.0, 2.0, 0.5], [], [0.25, 8.0]],
            "jet_pt": [10.0, 2.0, 4.0],
            "other": [[1.0], [], [2.0, 3.0]],
        }
    )
    expression = Expression(text, "data.variables.x")
    if text.endswith("+ other"):  # lists of different lengths cannot be combined
        with pytest.raises(ValueError):
            expression.evaluate(VariableResolver(arrays, {}))
        return
    fast = as_awkward(expression.evaluate(VariableResolver(arrays, {})))
    assert ak.to_list(fast) == ak.to_list(expression.evaluate(lambda name: arrays[name]))


def test_clip_acts_per_element_of_lists():
    """np.clip, which awkward cannot apply to lists, works element by element on the fast path."""
    arrays = ak.Array({"px": [[3.0, 0.0, 1.5], [], [1.0, 2.0]], "jet_pt": [10.0, 2.0, 4.0]})
    result = Expression("np.clip(px, 0.5, 2.0) * jet_pt", "k").evaluate(VariableResolver(arrays, {}))
    assert ak.to_list(as_awkward(result)) == [[20.0, 5.0, 15.0], [], [4.0, 8.0]]


def test_comparisons_boolean_logic_and_keywords():
    arrays = ak.Array({"a": [1.0, 5.0, 9.0], "n": [[1, 2], [], [3]]})
    resolve = VariableResolver(arrays, {})
    assert list(Expression("(a > 2) & (a < 8)", "k").evaluate(resolve)) == [False, True, False]
    assert list(Expression("a > 2 and not a > 8", "k").evaluate(resolve)) == [False, True, False]
    assert list(Expression("2 < a < 8", "k").evaluate(resolve)) == [False, True, False]
    assert list(Expression("ak.sum(n, axis=1)", "k").evaluate(resolve)) == [3, 0, 3]
    assert Expression("np.pi * 2", "k").evaluate(resolve) == pytest.approx(2 * np.pi)


def test_variables_use_each_other_and_read_only_needed_branches():
    variables = {
        "pt": Expression("np.hypot(px, py)", "data.variables.pt"),
        "logpt": Expression("np.log(pt)", "data.variables.logpt"),
        "unused": Expression("q * 2", "data.variables.unused"),
    }
    assert required_branches({"logpt", "jet_pt"}, variables) == {"px", "py", "jet_pt"}
    arrays = ak.Array({"px": [3.0], "py": [4.0]})
    assert VariableResolver(arrays, variables)("logpt")[0] == pytest.approx(np.log(5.0))


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "part_px.__class__",
        "open('/etc/passwd')",
        "np.load('x.npy')",
        "np.lib.npyio",
        "(lambda: 1)()",
        "[x for x in part_px]",
        "part_px[0]",
        "'text'",
        "eval('1')",
        "np",
        "_hidden + 1",
        "x if y else z",
    ],
)
def test_code_is_rejected_not_executed(text):
    with pytest.raises(
        ExpressionError, match=r"data\.variables\.bad.*not allowed|data\.variables\.bad.*parse"
    ):
        Expression(text, "data.variables.bad")


def test_syntax_error_names_the_key():
    with pytest.raises(ExpressionError, match=r"data\.selection: cannot parse"):
        Expression("jet_pt >", "data.selection")


def test_undefined_name_and_cycles_are_reported():
    arrays = ak.Array({"a": [1.0]})
    with pytest.raises(ExpressionError, match="'b' is neither a branch"):
        VariableResolver(arrays, {})("b")
    variables = {"x": Expression("y + 1", "data.variables.x"), "y": Expression("x * 2", "data.variables.y")}
    with pytest.raises(ExpressionError, match="cycle: x -> y -> x"):
        VariableResolver(arrays, variables)("x")
