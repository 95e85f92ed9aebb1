"""Checks of single configuration values: they return usable values and name the key of unusable ones."""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from hepnn.errors import ConfigError
from hepnn.utils import validation as check


@pytest.mark.parametrize(
    ("helper", "value", "expected"),
    [
        (check.boolean, False, False),
        (check.integer, -3, -3),
        (check.positive_int, 4, 4),
        (check.non_negative_int, 0, 0),
        (check.number, 3, 3.0),
        (check.positive_number, 0.5, 0.5),
        (check.non_negative_number, 0, 0.0),
        (check.dropout_rate, 0.0, 0.0),
        (check.number_list, (1, 2.5), [1.0, 2.5]),
        (check.string, "relu", "relu"),
    ],
)
def test_usable_values_come_back(helper, value, expected):
    result = helper(value, "model.net.key")
    assert result == expected and type(result) is type(expected)


@pytest.mark.parametrize(
    "helper",
    [check.integer, check.positive_int, check.non_negative_int, check.number, check.positive_number],
)
def test_bools_do_not_pass_for_numbers(helper):
    for value in (True, False):
        with pytest.raises(ConfigError, match=r"^model\.net\.width must be .*, got (True|False)$"):
            helper(value, "model.net.width")


@pytest.mark.parametrize(
    ("helper", "value", "message"),
    [
        (check.boolean, 1, "layers[2].batch_norm must be true or false, got 1"),
        (check.boolean, "yes", "layers[2].batch_norm must be true or false, got 'yes'"),
        (check.integer, 2.0, "layers[2].batch_norm must be an integer, got 2.0"),
        (check.positive_int, 0, "layers[2].batch_norm must be a positive integer, got 0"),
        (check.positive_int, 1.5, "layers[2].batch_norm must be a positive integer, got 1.5"),
        (check.non_negative_int, -1, "layers[2].batch_norm must be a non-negative integer, got -1"),
        (check.number, "far", "layers[2].batch_norm must be a number, got 'far'"),
        (check.number, math.nan, "layers[2].batch_norm must be a number, got nan"),
        (check.number, math.inf, "layers[2].batch_norm must be a number, got inf"),
        (check.positive_number, 0.0, "layers[2].batch_norm must be positive, got 0.0"),
        (check.non_negative_number, -1.0, "layers[2].batch_norm must not be negative, got -1.0"),
        (check.dropout_rate, 1.0, "layers[2].batch_norm must be in [0, 1), got 1.0"),
        (check.dropout_rate, -0.1, "layers[2].batch_norm must be in [0, 1), got -0.1"),
        (check.number_list, [1, "2"], "layers[2].batch_norm must be a list of numbers, got [1, '2']"),
        (check.number_list, 3.0, "layers[2].batch_norm must be a list of numbers, got 3.0"),
        (check.string, 3, "layers[2].batch_norm must be a string, got 3"),
    ],
)
def test_messages_name_the_key_and_what_was_expected(helper, value, message):
    with pytest.raises(ConfigError) as error:
        helper(value, "layers[2].batch_norm")
    assert str(error.value) == message
    assert "\n" not in str(error.value)


def test_units_are_named():
    with pytest.raises(ConfigError, match=r"^start_time_scale must be positive \(ns\), got -1$"):
        check.positive_number(-1, "start_time_scale", unit="ns")
    with pytest.raises(ConfigError, match=r"^noise must be a number \(VEM\), got None$"):
        check.non_negative_number(None, "noise", unit="VEM")


def test_require_for_ranges():
    check.require(True, "generate.array.altitude", "in [0, 10000) m", 1400.0)
    with pytest.raises(
        ConfigError, match=r"^generate\.array\.altitude must be in \[0, 10000\) m, got 20000.0$"
    ):
        check.require(False, "generate.array.altitude", "in [0, 10000) m", 20000.0)


def test_choice():
    assert check.choice("max", "pool", ["avg", "max"]) == "max"
    assert check.choice(None, "pool", ["avg", "max"], optional=True) is None
    with pytest.raises(ConfigError, match=r"^trigger\.level must be total or peak, got 'both'$"):
        check.choice("both", "trigger.level", ("total", "peak"))
    with pytest.raises(ConfigError, match=r"^pool must be one of \['avg', 'max'\] or null, got 'median'$"):
        check.choice("median", "pool", ["avg", "max"], optional=True)
    with pytest.raises(
        ConfigError, match=r"^global_pool must be one of \['avg', 'max', 'flatten'\], got None$"
    ):
        check.choice(None, "global_pool", ("avg", "max", "flatten"))
    with pytest.raises(ConfigError, match=r"^mode must be a or b, got \['a'\]$"):
        check.choice(["a"], "mode", ("a", "b"))  # an unhashable value is simply not allowed


def test_int_pair():
    assert check.int_pair(3, "kernel", minimum=1) == (3, 3)
    assert check.int_pair([3, 5], "kernel", minimum=1) == (3, 5)
    assert check.int_pair(OmegaConf.create([0, 2]), "padding", minimum=0) == (0, 2)
    with pytest.raises(ConfigError, match=r"^kernel must be an int or a pair \[h, w\], got \[1, 2, 3\]$"):
        check.int_pair([1, 2, 3], "kernel", minimum=1)
    with pytest.raises(ConfigError, match=r"^kernel must be an int or a pair \[h, w\], got True$"):
        check.int_pair(True, "kernel", minimum=1)
    with pytest.raises(ConfigError, match=r"^kernel must hold integers >= 1, got \[0, 3\]$"):
        check.int_pair([0, 3], "kernel", minimum=1)
    with pytest.raises(ConfigError, match=r"^kernel must hold integers >= 1, got \[True, 3\]$"):
        check.int_pair([True, 3], "kernel", minimum=1)


def test_mapping():
    config = {"channels": 4, "kernel": 3}
    assert check.mapping(config, "blocks[0]", ["channels", "kernel"], required=["channels"]) is config
    assert check.mapping(OmegaConf.create(config), "blocks[0]", ["channels", "kernel"])
    with pytest.raises(ConfigError, match=r"^blocks\[0\] must be a mapping of \['channels'\], got 4$"):
        check.mapping(4, "blocks[0]", ["channels"])
    with pytest.raises(
        ConfigError,
        match=r"^blocks\[0\]: unknown key\(s\) \['kernal'\]; known keys are \['channels', 'kernel'\]$",
    ):
        check.mapping({"channels": 4, "kernal": 3}, "blocks[0]", ["channels", "kernel"])
    with pytest.raises(ConfigError, match=r"^blocks\[0\]: key 'channels' is required$"):
        check.mapping({"kernel": 3}, "blocks[0]", ["channels", "kernel"], required=["channels"])


def test_mapping_list():
    assert check.mapping_list(({"channels": 4},), "blocks", "block") == [{"channels": 4}]
    assert check.mapping_list([], "spatial_layers", "layer") == []
    with pytest.raises(ConfigError, match=r"^blocks must be a non-empty list of block mappings, got \[\]$"):
        check.mapping_list([], "blocks", "block", allow_empty=False)
    for value in ({"channels": 4}, "conv", 3):
        with pytest.raises(ConfigError, match=r"^trace_layers must be a list of layer mappings"):
            check.mapping_list(value, "trace_layers", "layer")
