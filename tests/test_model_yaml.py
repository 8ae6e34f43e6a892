"""latprof YAML model configs: layers, patterns, defaults, blocks, and every bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from latprof.config_yaml import load_yaml_model, parse_pattern
from latprof.errors import InputError
from latprof.model import ModelSpec, load_model
from latprof.registry import build_spec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str, name: str = "model.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---- patterns ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("attention ffn", ["attention", "ffn"]),
        ("attention*3", ["attention"] * 3),
        ("(mamba2 ffn)*2 attention", ["mamba2", "ffn", "mamba2", "ffn", "attention"]),
        ("(mamba2 ffn)x2", ["mamba2", "ffn", "mamba2", "ffn"]),
        ("(mamba2 ffn) x2", ["mamba2", "ffn", "mamba2", "ffn"]),
        ("attention x3", ["attention"] * 3),
        ("((a b)*2 c)*2", ["a", "b", "a", "b", "c"] * 2),
        ("a, b,c", ["a", "b", "c"]),
        ("a * 2", ["a", "a"]),
    ],
)
def test_pattern_expands(pattern, expected):
    assert parse_pattern(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("(a b", "without its ')'"),
        ("a b)", "unmatched ')'"),
        ("*3 a", "follows nothing"),
        ("a*0", ">= 1"),
        ("()*2", "empty group"),
        ("(a)*100000", "more than"),
        ("a*2*3", "follows nothing"),
    ],
)
def test_pattern_errors(pattern, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_pattern(pattern)


# ---- whole configs -------------------------------------------------------------------------------
def test_pattern_config_with_defaults_and_blocks(tmp_path):
    path = write(
        tmp_path,
        """
name: tiny
width: 512
vocab_size: 1000
tied_embeddings: true
meta_tokens: 8
defaults:
  attention: {heads: 4, kv_heads: 1}
  ffn: {ffn_dim: 1024}
blocks:
  wide: {op: ffn, ffn_dim: 2048}
pattern: "(attention ffn)*2 mamba2 wide"
""",
    )
    model = load_yaml_model(path)
    assert model.name == "tiny" and model.width == 512 and model.vocab_size == 1000
    assert model.tied_embeddings and model.meta_tokens == 8
    assert [s.op for s in model.layers] == ["attention", "ffn"] * 2 + ["mamba2", "ffn"]
    attention = model.layers[0]
    assert attention == build_spec("attention", 512, heads=4, kv_heads=1)
    assert model.layers[1].ffn_dim == 1024 and model.layers[5].ffn_dim == 2048
    # the same entry resolves to the very same spec object (one LUT look-up per distinct spec)
    assert model.layers[0] is model.layers[2]
    assert model.counts[model.layers[1]] == 2


def test_layers_list_overrides_win_over_defaults(tmp_path):
    path = write(
        tmp_path,
        """
width: 320
vocab_size: 640
defaults:
  ffn: {ffn_dim: 640}
layers:
  - attention
  - {op: ffn, ffn_dim: 960, activation: relu2}
  - ffn
""",
        name="listed.yaml",
    )
    model = load_yaml_model(path)
    assert model.name == "listed"  # the file name when `name` is absent
    assert [s.op for s in model.layers] == ["attention", "ffn", "ffn"]
    assert model.layers[1].ffn_dim == 960 and model.layers[1].activation == "relu2"
    assert model.layers[2].ffn_dim == 640 and model.layers[2].activation == "swiglu"
    # derived defaults fill what nobody gave: heads = 320 / 128 does not divide, so head_dim
    # comes from the spec's rule, never overwriting a value the config gave
    assert model.layers[0] == build_spec("attention", 320)


def test_derived_defaults_never_overwrite_given_values(tmp_path):
    path = write(
        tmp_path,
        """
width: 1024
vocab_size: 100
defaults:
  attention: {heads: 16, head_dim: 64, kv_heads: 16}
pattern: attention
""",
    )
    spec = load_yaml_model(path).layers[0]
    assert (spec.heads, spec.head_dim, spec.kv_heads) == (16, 64, 16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width: 64\nvocab_size: [1,\n", r"model.yaml:\d+:\d+: malformed YAML"),
        ("width: 64\n  vocab_size: 10\n", r"model.yaml:2:\d+: malformed YAML"),
        ("width: 64\nwidth: 65\nvocab_size: 10\npattern: ffn\n", r"model.yaml:2:1: .*duplicate"),
        ("- just\n- a list\n", "YAML mapping"),
        ("vocab_size: 10\npattern: ffn\n", "required field 'width'"),
        ("width: 64\npattern: ffn\n", "required field 'vocab_size'"),
        ("width: 64\nvocab_size: 10\n", "exactly one of"),
        ("width: 64\nvocab_size: 10\npattern: ffn\nlayers: [ffn]\n", "exactly one of"),
        ("width: 64\nvocab_size: 10\nlayers: []\n", "empty"),
        ("width: 64\nvocab_size: 10\npattern: ''\n", "empty"),
        ("width: -64\nvocab_size: 10\npattern: ffn\n", r"model.yaml:1: width must be"),
        ("width: 64.5\nvocab_size: 10\npattern: ffn\n", "width must be an integer"),
        ("width: 64\nvocab_size: 10\npattern: ffn atention\n", r"model.yaml:3: unknown operator"),
        (
            "width: 64\nvocab_size: 10\nlayers:\n  - ffn\n  - atention\n",
            r"model.yaml:5: unknown operator 'atention'",
        ),
        ("width: 64\nvocab_size: 10\nlayers: [{ffn_dim: 3}]\n", "needs `op:`"),
        ("width: 64\nvocab_size: 10\nlayers: [3]\n", "operator name or"),
        ("width: 64\nvocab_size: 10\npattern: embedding ffn\n", "added from width"),
        ("width: 64\nvocab_size: 10\npattern: mamba2x4\n", "a repetition needs a space"),
        ("width: 64\nvocab_size: 10\nvocab: 3\npattern: ffn\n", "unknown field.*vocab"),
        (
            "width: 64\nvocab_size: 10\ndefaults: {atention: {}}\npattern: ffn\n",
            "defaults for unknown operator",
        ),
        (
            "width: 64\nvocab_size: 10\ndefaults: {ffn: {hidden: 3}}\npattern: ffn\n",
            "unknown parameter",
        ),
        (
            "width: 96\nvocab_size: 10\ndefaults: {attention: {heads: 5}}\npattern: attention\n",
            "does not divide",
        ),
        ("width: 256\nvocab_size: 10\nlayers: [{op: mamba2, head_dim: 100}]\n", "does not divide"),
        ("width: 64\nvocab_size: 10\nlayers: [{op: ffn, width: 32}]\n", "width is the model's"),
        ("width: 64\nvocab_size: 10\nlayers: [{op: ffn, ffn_dim: [1, 2]}]\n", "ffn"),
        ("width: 64\nvocab_size: 10\ntied_embeddings: 1\npattern: ffn\n", "true or false"),
        ("width: 64\nvocab_size: 10\nblocks: {x4: {op: ffn}}\npattern: ffn\n", "reserved"),
        ("width: 64\nvocab_size: 10\nblocks: {big: {ffn_dim: 3}}\npattern: big\n", "needs `op:`"),
    ],
)
def test_bad_yaml_configs(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        load_yaml_model(write(tmp_path, text))


def test_model_spec_rejects_impossible_models():
    ffn = build_spec("ffn", 64)
    with pytest.raises(InputError, match="empty"):
        ModelSpec("m", 64, 10, ())
    with pytest.raises(InputError, match="has width 64, the model 128"):
        ModelSpec("m", 128, 10, (ffn,))
    with pytest.raises(InputError, match="meta_tokens"):
        ModelSpec("m", 64, 10, (ffn,), meta_tokens=-1)


def test_load_model_dispatch_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "nope.yaml")
    bad = write(tmp_path, "x", name="model.toml")
    with pytest.raises(InputError, match="unknown model config format"):
        load_model(bad)
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(
        '{"model_type": "mamba", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10}'
    )
    assert load_model(tmp_path / "hf").name == "hf"  # a directory holding config.json


# ---- the example configs -------------------------------------------------------------------------
def test_example_configs_load_with_published_shapes():
    flash1b = load_model(CONFIGS / "nemotron-flash-1b.yaml")
    code = {"deltanet": "D", "ffn": "F", "mamba2": "M2", "attention": "A"}
    assert " ".join(code[s.op] for s in flash1b.layers) == (
        "D F M2 F A F M2 F D F M2 F A F M2 F D F M2 F D F M2 F"
    )
    assert flash1b.width == 2048 and flash1b.vocab_size == 131072 and flash1b.meta_tokens == 256
    attention = next(s for s in flash1b.layers if s.op == "attention")
    assert (attention.heads, attention.kv_heads) == (16, 4)
    assert next(s for s in flash1b.layers if s.op == "ffn").ffn_dim == 6144

    flash3b = load_model(CONFIGS / "nemotron-flash-3b.yaml")
    assert len(flash3b.layers) == 36 and flash3b.width == 3072
    mamba2 = next(s for s in flash3b.layers if s.op == "mamba2")
    assert (mamba2.heads, mamba2.head_dim, mamba2.d_state, mamba2.n_groups) == (96, 64, 128, 1)
    assert next(s for s in flash3b.layers if s.op == "ffn").ffn_dim == 9216

    deep, wide = (
        load_model(CONFIGS / "llama-24-blocks.yaml"),
        load_model(CONFIGS / "llama-12-blocks.yaml"),
    )
    assert len(deep.layers) == 2 * 24 and len(wide.layers) == 2 * 12
    assert wide.param_count() > 1.2 * deep.param_count()

    for name, op in (
        ("mamba2-500m", "mamba2"),
        ("gated-deltanet-500m", "gated_deltanet"),
        ("attention-500m", "attention"),
    ):
        model = load_model(CONFIGS / f"{name}.yaml")
        assert 0.45e9 < model.param_count() < 0.55e9, name
        assert {s.op for s in model.layers} <= {op, "ffn"}


def test_every_example_config_loads():
    for path in sorted(CONFIGS.glob("*.yaml")):
        model = load_model(path)
        assert model.layers and model.param_count() > 0, path


@pytest.mark.parametrize(
    "fixture", ["olmo-1b-hf.json", "gemma-3-270m.json", "falcon-h1-0.5b.json", "lfm2-2.6b.json"]
)
def test_a_model_written_as_yaml_reads_back_equal(tmp_path, fixture):
    """`model_to_yaml` (frontier and search write candidates with it) keeps what changes the
    count and the work: OLMo's weightless norms, the trained length, windows, Mamba2 inner
    sizes."""
    from latprof.config_yaml import model_to_yaml

    model = load_model(Path(__file__).resolve().parent / "fixtures" / "hf-configs" / fixture)
    path = tmp_path / "model.yaml"
    path.write_text(model_to_yaml(model))
    back = load_model(path)
    assert back.layers == model.layers
    assert back.norm_weights == model.norm_weights
    assert back.max_positions == model.max_positions
    assert back.param_count() == model.param_count()
