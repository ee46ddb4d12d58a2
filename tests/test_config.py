import dataclasses

import pytest

from esacl.config import PROTOCOL_KEYS, TUNED_KEYS, RunConfig, UserError, _field, resolve
from esacl.data import BENCHMARKS


def error(**values) -> str:
    with pytest.raises(UserError) as info:
        RunConfig.from_dict(values)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_the_nearest_valid_key():
    message = error(bufer_size=10)
    assert message.startswith("unknown config key 'bufer_size' (did you mean 'buffer_size'?)")
    assert "valid keys: benchmark, method, seed" in message


def test_wrong_type_names_key_and_expected_type():
    assert "'lr' expects float or None" in error(lr="fast")
    assert "'epochs' expects int or None" in error(epochs=2.5)
    assert "'seed' expects int" in error(seed=True)  # bool is not an int here
    assert "'progress' expects bool" in error(progress="yes")


@pytest.mark.parametrize(
    "key, value, interval",
    [
        ("lr", -0.1, "(0, inf)"),
        ("lr", 0.0, "(0, inf)"),
        ("sparsity", 1.0, "[0, 1)"),
        ("sparsity", -0.1, "[0, 1)"),
        ("n_tasks", 0, "[1, inf)"),
        ("epochs", 0, "[1, inf)"),
        ("ewc_gamma", 1.5, "[0, 1]"),
        ("lr", float("nan"), "(0, inf)"),
    ],
)
def test_out_of_range_names_the_allowed_interval(key, value, interval):
    assert f"'{key}' must be in {interval}" in error(**{key: value})


def test_unknown_method_and_benchmark_list_choices_with_a_hint():
    message = error(method="dérpp")
    assert "must be one of:" in message and "did you mean 'derpp'" in message
    assert "split_digits" in error(benchmark="split_digit")
    assert "cuda:N" in error(device="tpu")


def test_int_is_accepted_for_float_and_converted():
    cfg = RunConfig.from_dict(dict(lr=1))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)


def test_from_strings_parses_each_type():
    cfg = RunConfig.from_strings(dict(lr="0.05", epochs="3", progress="false", n_tasks="none", method="er"))
    assert (cfg.lr, cfg.epochs, cfg.progress, cfg.n_tasks, cfg.method) == (0.05, 3, False, None, "er")
    with pytest.raises(UserError, match="'epochs' expects int or None, got 'three'"):
        RunConfig.from_strings(dict(epochs="three"))


def test_resolve_fills_protocol_defaults_and_says_which():
    protocol = BENCHMARKS["split_digits"].protocol
    cfg, filled = resolve(RunConfig(lr=0.1, rho=0.2))
    assert cfg.lr == 0.1 and "lr" not in filled and cfg.rho == 0.2 and "rho" not in filled
    assert set(filled) == (set(PROTOCOL_KEYS) - {"lr"}) | (set(TUNED_KEYS) - {"rho"}) | {"sparsity"}
    assert cfg.epochs == protocol["epochs"] and cfg.buffer_size == protocol["buffer_size"]
    assert cfg.sparsity == 0.0  # sgd is dense
    assert resolve(RunConfig(method="esacl"))[0].sparsity == 0.9
    cfg, filled = resolve(RunConfig(method="esacl", sparsity=0.75))
    assert cfg.sparsity == 0.75 and "sparsity" not in filled


def test_tuned_knobs_take_the_values_chosen_for_the_runs_families_on_its_benchmark(monkeypatch):
    tuned = dict(esacl=dict(removal_fraction=0.1, rho=0.2), sparcl=dict(removal_fraction=0.5), ewc=dict(ewc_lambda=7.0))
    monkeypatch.setitem(BENCHMARKS, "split_digits", dataclasses.replace(BENCHMARKS["split_digits"], tuned=tuned))
    untuned = {k: _field(k).metadata["tuned"] for k in TUNED_KEYS}
    for method, families in (
        ("esacl-er", ["esacl"]),
        ("ids-only", ["esacl"]),
        ("sparcl-ewc", ["sparcl", "ewc"]),
        ("esacl-ewc", ["esacl", "ewc"]),
        ("er", []),
    ):
        cfg = resolve(RunConfig(method=method))[0]
        expected = untuned | {k: v for f in families for k, v in tuned[f].items()}
        assert {k: getattr(cfg, k) for k in TUNED_KEYS} == expected, method
    assert resolve(RunConfig(method="sparcl-er", removal_fraction=0.3))[0].removal_fraction == 0.3  # a set value wins


def test_replace_rejects_unknown_keys():
    with pytest.raises(UserError, match="unknown config key 'seeds'"):
        RunConfig().replace(seeds=3)


def test_cross_expands_every_combination_last_axis_fastest():
    from esacl.config import cross

    assert cross({"epochs": "1"}, {"method": ["sgd", "er"], "seed": ["0", "1"]}) == [
        {"epochs": "1", "method": "sgd", "seed": "0"},
        {"epochs": "1", "method": "sgd", "seed": "1"},
        {"epochs": "1", "method": "er", "seed": "0"},
        {"epochs": "1", "method": "er", "seed": "1"},
    ]
    assert cross({"seed": "3"}, {}) == [{"seed": "3"}]


def test_runconfig_is_the_union_of_the_components_sections_each_key_once():
    """Each component declares its own knobs (a learner's under its prefix); RunConfig has each once,
    and a section read out of a config carries that config's values, typed."""
    import dataclasses

    from esacl.knobs import Section
    from esacl.learners import DERpp, DERppConfig
    from esacl.steps import SAMConfig

    sections = [c for c in RunConfig.__mro__[1:] if dataclasses.is_dataclass(c) and issubclass(c, Section)]
    keys = [f.name for c in reversed(sections) for f in dataclasses.fields(c)]
    assert keys == [f.name for f in dataclasses.fields(RunConfig)] and len(set(keys)) == len(keys)
    assert {f.name for f in dataclasses.fields(DERppConfig)} == {"derpp_alpha", "derpp_beta"}
    cfg = RunConfig(method="derpp", derpp_alpha=0.3, rho=0.2)
    assert SAMConfig.of(cfg) == SAMConfig(rho=0.2) and DERpp(cfg, 10, 0).opts == DERppConfig(derpp_alpha=0.3)


def test_a_renamed_key_says_its_new_name():
    assert error(alpha=0.3) == "config key 'alpha' is now 'derpp_alpha'"
    with pytest.raises(UserError, match="'beta' is now 'derpp_beta'"):
        RunConfig.from_strings({"beta": "0.2"})
