"""Property-based fuzzing of everything that reads user input (issue 16): the YAML and HF JSON
config loaders, the LUT reader, the op-spec parser and the CLI's list flags get random and
mutated inputs; the only allowed outcomes are a result or an `InputError` (exit 2).

Bounded (`max_examples`, `deadline`) so CI stays fast; `derandomize` makes a CI failure
reproducible.  A failure prints the input that caused it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from latprof import config_hf, config_yaml, inputs, lut  # noqa: E402
from latprof.errors import InputError  # noqa: E402
from latprof.registry import spec_from_key  # noqa: E402
from latprof.settings import BackendRequest, parse_counts  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HF = Path(__file__).parent / "fixtures" / "hf-configs"
FUZZ = settings(
    max_examples=100,
    deadline=2000,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
YAML_SEEDS = [p.read_text() for p in sorted((ROOT / "configs").glob("*.yaml"))[:4]]
HF_SEEDS = [json.loads(p.read_text()) for p in sorted(HF.glob("*.json"))[:6]]
LUT_TEXT = (ROOT / "luts" / "cpu-intel-xeon-2core-llama.csv").read_text()


def allowed(fn, *args) -> None:
    """`fn(*args)` returns, or raises InputError: nothing else."""
    with contextlib.suppress(InputError):
        fn(*args)


@st.composite
def mutated(draw, seeds: list[str]) -> str:
    """A seed text with a few bytes replaced, inserted or deleted, or a slice repeated."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 6))):
        if not text:
            break
        at = draw(st.integers(0, len(text) - 1))
        action = draw(st.sampled_from(["replace", "insert", "delete", "repeat"]))
        junk = draw(
            st.text(alphabet=st.sampled_from("[]{}():*&!,-\"'\n 0123456789e.x#|>"), max_size=8)
        )
        if action == "replace":
            text = text[:at] + junk + text[at + len(junk) :]
        elif action == "insert":
            text = text[:at] + junk + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        else:
            text = text[:at] + text[at : at + 40] * draw(st.integers(2, 5)) + text[at:]
    return text


# subnormals off: a sweep earlier in the session sets torch.set_flush_denormal(True), process-wide,
# and hypothesis refuses to draw subnormal floats under flush-to-zero
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_subnormal=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)


@FUZZ
@given(text=mutated(YAML_SEEDS) | st.text(max_size=300))
def test_yaml_model_loader(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("y") / "m.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    allowed(config_yaml.load_yaml_model, path)


@FUZZ
@given(
    seed=st.sampled_from(HF_SEEDS),
    key=st.sampled_from(
        [
            "hidden_size",
            "num_hidden_layers",
            "vocab_size",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "head_dim",
            "model_type",
            "layer_types",
            "tie_word_embeddings",
            "hybrid_override_pattern",
            "num_experts",
            "state_size",
        ]
    ),  # fmt: skip
    value=json_values,
)
def test_hf_config_loader_with_a_field_replaced(seed, key, value):
    allowed(config_hf.model_from_hf, dict(seed, **{key: value}), "<fuzz>")


@FUZZ
@given(text=mutated([json.dumps(s, indent=1) for s in HF_SEEDS]))
def test_hf_config_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("j") / "config.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    allowed(config_hf.load_hf_config, path)


@FUZZ
@given(text=mutated([LUT_TEXT]), sidecar=st.one_of(st.none(), json_values.map(json.dumps)))
def test_lut_reader(tmp_path_factory, text, sidecar):
    path = tmp_path_factory.mktemp("l") / "lut.csv"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    if sidecar is not None:
        path.with_suffix(".json").write_text(sidecar)
    for strict in (True, False):
        allowed(lut.LUT.load, path, strict)


@FUZZ
@given(data=st.binary(max_size=400))
def test_lut_reader_on_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("b") / "lut.csv"
    path.write_bytes(LUT_TEXT.encode()[:200] + data)
    allowed(lut.read_rows, path)


OP_KEYS = [
    "ffn(width=2048,ffn_dim=6144,activation=swiglu)",
    "attention(width=2048,heads=16,kv_heads=4,head_dim=128,qk_norm=false)",
    "mamba2(width=1024)",
    "lm_head(width=512,vocab_size=32000)",
]


@FUZZ
@given(key=mutated(OP_KEYS) | st.text(max_size=80))
def test_op_spec_parser(key):
    allowed(spec_from_key, key)


@FUZZ
@given(
    text=st.text(alphabet=st.sampled_from("0123456789,k -+.xe_"), max_size=40)
    | st.text(max_size=40),
    name=st.sampled_from(["batch", "context", "widths", "depths", "prompt"]),
)
def test_cli_list_flags(text, name):
    allowed(parse_counts, text, name)
    allowed(BackendRequest.parse, text)


@FUZZ
@given(text=mutated(["ops: [ffn]\nwidths: [64, 128]\nbatch: [1]\ncontext: [128]\n"]))
def test_sweep_spec_file(tmp_path_factory, text):
    from latprof import grid

    path = tmp_path_factory.mktemp("s") / "spec.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")

    def load():
        data = grid.load_spec_file(path)
        request = grid.request_from_file(data, device="cpu", dtype=None, mode=None, path=str(path))
        grid.expand(request)

    allowed(load)


@FUZZ
@given(value=json_values)
def test_bounded_numbers(value):
    allowed(inputs.bounded_int, value, "x")
    allowed(inputs.bounded_float, value, "x")
    assert len(inputs.quote(value)) <= inputs.QUOTE_CHARS
