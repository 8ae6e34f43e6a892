"""latprof's own model config format (YAML).

```yaml
name: nemotron-flash-1b     # optional; default: the file name
width: 2048                 # required: hidden size
vocab_size: 131072          # required
tied_embeddings: true       # optional (false): LM head shares the embedding matrix
meta_tokens: 256            # optional (0): tokens prepended to every sequence
norm_weights: false         # optional (true): false when the RMS norms have no weights (OLMo)
max_positions: 8192         # optional: the longest context the model is defined for
defaults:                   # optional: parameters per operator, for every layer of that operator
  attention: {heads: 16, kv_heads: 4}
  ffn: {ffn_dim: 6144}
blocks:                     # optional: named layer variants, usable like operator names
  wide_ffn: {op: ffn, ffn_dim: 8192}
pattern: "deltanet ffn (mamba2 ffn)*2 attention wide_ffn"
# or, instead of pattern, one entry per layer:
# layers: [attention, {op: ffn, ffn_dim: 4096}, wide_ffn]
weight_ties: [[12, 5], [19, 5]]   # optional: [layer, owner] pairs, layers counted from 0 in
                                  # the expanded list: layer reuses owner's shared weights
```

Pattern syntax: names separated by spaces (an operator or a block name); `(...)` groups;
`*N` or `xN` after a name or a group repeats it N times (`attention*2`, `(mamba2 ffn)*4`,
`(mamba2 ffn) x4`); groups nest.  Commas are treated as spaces.  Parameters given in a layer or
block win over `defaults`, which win over the defaults derived from the width
(`latprof.specs.build_spec`).  Errors name the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from latprof import inputs
from latprof.errors import InputError
from latprof.model_spec import ModelSpec
from latprof.registry import IMPLICIT_OPS, OPERATOR_NAMES, build_spec
from latprof.specs import OpSpec

TOP_LEVEL_KEYS = (
    "name",
    "width",
    "vocab_size",
    "tied_embeddings",
    "meta_tokens",
    "defaults",
    "blocks",
    "pattern",
    "layers",
    "description",
    "max_positions",
    "norm_weights",
    "weight_ties",
)
#: more layers than this is a typo in a repetition count, not a model
MAX_LAYERS = inputs.MAX_LAYERS
_TOKEN = re.compile(r"\s*(?:(?P<open>\()|(?P<close>\))|\*\s*(?P<star>\d+)|(?P<word>[^\s()*,]+)|,)")


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class _Sequence(list):
    """A YAML sequence that remembers the line of each item (1-based)."""

    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    mapping = _Mapping()
    mapping.line = node.start_mark.line + 1
    mapping.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.key_lines[key] = key_node.start_mark.line + 1
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> _Sequence:
    seq = _Sequence(loader.construct_object(child, deep=True) for child in node.value)
    seq.line = node.start_mark.line + 1
    seq.item_lines = [child.start_mark.line + 1 for child in node.value]
    return seq


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; malformed YAML is an InputError naming file, line and column."""
    text = inputs.read_text(path, "config")  # exists, a file, UTF-8, bounded in size
    return inputs.parse_yaml(text, str(path), loader=_Loader)  # bounded numbers, depth, size


def load_yaml_model(path: str | Path) -> ModelSpec:
    path = Path(path)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise InputError(
            f"{path}: a latprof model config is a YAML mapping with width, vocab_size and "
            f"layers or pattern; this file holds {type(data).__name__}"
        )
    return model_from_dict(data, source=str(path), default_name=path.stem)


def _where(source: str, node: Any, key: Any = None) -> str:
    line = 0
    if isinstance(node, _Mapping):
        line = node.key_lines.get(key, node.line) if key is not None else node.line
    elif isinstance(node, _Sequence):
        line = node.item_lines[key] if isinstance(key, int) else node.line
    return f"{source}:{line}" if line else source


def _int(data: dict, key: str, source: str, default: int | None = None, minimum: int = 1) -> int:
    if key not in data:
        if default is None:
            raise InputError(f"{source}: required field {key!r} is missing")
        return default
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(
            f"{_where(source, data, key)}: {key} must be an integer >= {minimum}, "
            f"got {inputs.quote(value)}"
        )
    return inputs.bounded_int(value, f"{_where(source, data, key)}: {key}", minimum)


def model_from_dict(data: dict, source: str = "<config>", default_name: str = "model") -> ModelSpec:
    """Build a ModelSpec from a parsed latprof YAML mapping."""
    unknown = [k for k in data if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise InputError(
            f"{_where(source, data, unknown[0])}: unknown field(s) {', '.join(map(str, unknown))}; "
            f"valid fields: {', '.join(TOP_LEVEL_KEYS)}"
        )
    width = _int(data, "width", source)
    vocab_size = _int(data, "vocab_size", source)
    meta_tokens = _int(data, "meta_tokens", source, default=0, minimum=0)
    tied = data.get("tied_embeddings", False)
    if not isinstance(tied, bool):
        raise InputError(
            f"{_where(source, data, 'tied_embeddings')}: tied_embeddings must be true or false"
        )
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name:
        raise InputError(f"{_where(source, data, 'name')}: name must be a non-empty string")

    defaults = _defaults(data.get("defaults") or {}, source, data)
    blocks = _blocks(data.get("blocks") or {}, source, data)
    resolver = _LayerResolver(width, defaults, blocks, source)

    if ("pattern" in data) == ("layers" in data):
        raise InputError(
            f"{source}: give exactly one of `layers:` (a list) or `pattern:` (a string such as "
            '"(attention ffn)*12")'
        )
    if "pattern" in data:
        names = parse_pattern(data["pattern"], _where(source, data, "pattern"))
        layers = tuple(resolver.named(n, _where(source, data, "pattern")) for n in names)
    else:
        layers = _layers(data["layers"], resolver, source, data)
    if not layers:
        raise InputError(f"{source}: the layer list is empty; a model needs at least one layer")
    max_positions = (
        _int(data, "max_positions", source) if data.get("max_positions") is not None else None
    )
    norm_weights = data.get("norm_weights", True)
    if not isinstance(norm_weights, bool):
        raise InputError(
            f"{_where(source, data, 'norm_weights')}: norm_weights must be true or false"
        )
    ties = _weight_ties(data.get("weight_ties"), source, data)
    try:
        return ModelSpec(
            name,
            width,
            vocab_size,
            layers,
            tied,
            meta_tokens,
            source,
            max_positions=max_positions,
            norm_weights=norm_weights,
            weight_ties=ties,
        )
    except InputError as exc:
        if not ties:
            raise
        raise InputError(f"{_where(source, data, 'weight_ties')}: {exc}") from None


def _weight_ties(raw: Any, source: str, parent: dict) -> tuple[tuple[int, int], ...]:
    """`weight_ties: [[layer, owner], ...]` -> ((layer, owner), ...); the ModelSpec checks the
    indices against the layers."""
    if raw is None:
        return ()
    where = _where(source, parent, "weight_ties")
    if not isinstance(raw, list):
        raise InputError(
            f"{where}: weight_ties must be a list of [layer, owner] pairs, e.g. [[12, 5]]"
        )
    if len(raw) > MAX_LAYERS:
        raise InputError(f"{where}: {len(raw)} weight_ties is more than the limit of {MAX_LAYERS}")
    ties = []
    for i, pair in enumerate(raw):
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) for v in pair)
        ):
            raise InputError(
                f"{_where(source, raw, i)}: a weight_ties entry is [layer, owner], two layer "
                f"indices counted from 0, got {inputs.quote(pair)}"
            )
        ties.append((pair[0], pair[1]))
    return tuple(ties)


def _defaults(raw: Any, source: str, parent: dict) -> dict[str, dict[str, Any]]:
    where = _where(source, parent, "defaults")
    if not isinstance(raw, dict):
        raise InputError(f"{where}: defaults must map operator names to parameters")
    out = {}
    for op, params in raw.items():
        if op not in OPERATOR_NAMES or op in IMPLICIT_OPS:
            raise InputError(
                f"{_where(source, raw, op)}: defaults for unknown operator {op!r}; valid: "
                f"{', '.join(o for o in OPERATOR_NAMES if o not in IMPLICIT_OPS)}"
            )
        if not isinstance(params, dict):
            raise InputError(f"{_where(source, raw, op)}: defaults.{op} must be a mapping")
        out[op] = dict(params)
    return out


def _blocks(raw: Any, source: str, parent: dict) -> dict[str, tuple[str, dict[str, Any], str]]:
    where = _where(source, parent, "blocks")
    if not isinstance(raw, dict):
        raise InputError(f"{where}: blocks must map names to {{op: ..., <params>}}")
    out = {}
    for name, body in raw.items():
        at = _where(source, raw, name)
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name):
            raise InputError(f"{at}: block name {name!r} must be a word (letters, digits, _ . -)")
        if name in OPERATOR_NAMES or re.fullmatch(r"x\d+", name):
            raise InputError(f"{at}: block name {name!r} is reserved (an operator or xN)")
        if not isinstance(body, dict) or "op" not in body:
            raise InputError(f"{at}: block {name!r} needs `op:` and optional parameters")
        params = {k: v for k, v in body.items() if k != "op"}
        out[name] = (body["op"], params, at)
    return out


class _LayerResolver:
    """Turns layer names / entries into specs, caching one spec per distinct entry."""

    def __init__(self, width: int, defaults: dict, blocks: dict, source: str) -> None:
        self.width, self.defaults, self.blocks, self.source = width, defaults, blocks, source
        self.cache: dict[Any, OpSpec] = {}

    def build(self, op: Any, params: dict[str, Any], where: str) -> OpSpec:
        if not isinstance(op, str) or op not in OPERATOR_NAMES or op in IMPLICIT_OPS:
            hint = ""
            if op in IMPLICIT_OPS:
                hint = " (the embedding and LM head are added from width and vocab_size)"
            valid = [o for o in OPERATOR_NAMES if o not in IMPLICIT_OPS]
            blocks = f"; blocks: {', '.join(self.blocks)}" if self.blocks else ""
            if isinstance(op, str) and re.fullmatch(r".+[x*]\d+", op):
                hint = " (a repetition needs a space or '*': `mamba2 x4` or `mamba2*4`)"
            raise InputError(
                f"{where}: unknown operator {op!r}{hint}; valid: {', '.join(valid)}{blocks}"
            )
        if "width" in params:
            raise InputError(f"{where}: width is the model's; a layer cannot set its own")
        merged = {**self.defaults.get(op, {}), **params}
        key: tuple | None = (op, tuple(sorted(merged.items())))
        try:
            hash(key)
        except TypeError:  # an unhashable value (a list...): build_spec will reject it
            key = None
        spec = self.cache.get(key) if key else None
        if spec is None:
            try:
                spec = build_spec(op, self.width, **merged)
            except InputError as exc:
                raise InputError(f"{where}: {exc}") from None
            except TypeError as exc:
                raise InputError(f"{where}: {op}: bad parameter value ({exc})") from None
            if key:
                self.cache[key] = spec
        return spec

    def named(self, name: str, where: str) -> OpSpec:
        if name in self.blocks:
            op, params, _ = self.blocks[name]
            return self.build(op, params, where)
        return self.build(name, {}, where)


def _layers(raw: Any, resolver: _LayerResolver, source: str, parent: dict) -> tuple[OpSpec, ...]:
    if not isinstance(raw, list):
        raise InputError(f"{_where(source, parent, 'layers')}: layers must be a list")
    if len(raw) > MAX_LAYERS:
        raise InputError(f"{source}: {len(raw)} layers is more than the limit of {MAX_LAYERS}")
    out = []
    for i, entry in enumerate(raw):
        where = _where(source, raw, i)
        if isinstance(entry, str):
            out.append(resolver.named(entry, where))
        elif isinstance(entry, dict):
            if "op" not in entry:
                raise InputError(f"{where}: a layer mapping needs `op:` (e.g. {{op: ffn}})")
            params = {k: v for k, v in entry.items() if k != "op"}
            op = entry["op"]
            if op in resolver.blocks:
                block_op, block_params, _ = resolver.blocks[op]
                out.append(resolver.build(block_op, {**block_params, **params}, where))
            else:
                out.append(resolver.build(op, params, where))
        else:
            raise InputError(
                f"{where}: a layer is an operator name or {{op: name, <params>}}, got {entry!r}"
            )
    return tuple(out)


def parse_pattern(text: Any, where: str = "pattern") -> list[str]:
    """Expand a pattern string into layer names: `"a (b c)*2"` -> [a, b, c, b, c]."""
    if not isinstance(text, str):
        raise InputError(f'{where}: pattern must be a string such as "(attention ffn)*12"')
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip() == "":
                break
            raise InputError(f"{where}: pattern: unexpected {text[pos:].strip()[:20]!r}")
        pos = match.end()
        kind = match.lastgroup
        if kind is None:  # a comma
            continue
        value = match.group(kind)
        if kind == "word" and re.fullmatch(r"x\d+", value):
            kind, value = "star", value[1:]
        tokens.append((kind, value))
    items, index = _parse_sequence(tokens, 0, where)
    if index != len(tokens):
        raise InputError(f"{where}: pattern: unmatched ')'")
    if len(items) > MAX_LAYERS:
        raise InputError(f"{where}: pattern expands to {len(items)} layers (limit {MAX_LAYERS})")
    if not items:
        raise InputError(f"{where}: the pattern is empty; a model needs at least one layer")
    return items


def _parse_sequence(tokens: list[tuple[str, str]], i: int, where: str) -> tuple[list[str], int]:
    out: list[str] = []
    last: list[str] | None = None  # the item a following repetition applies to
    while i < len(tokens):
        kind, value = tokens[i]
        if kind == "close":
            break
        if kind == "open":
            last, i = _parse_sequence(tokens, i + 1, where)
            if i >= len(tokens) or tokens[i][0] != "close":
                raise InputError(f"{where}: pattern: '(' without its ')'")
            if not last:
                raise InputError(f"{where}: pattern: empty group '()'")
            out.extend(last)
            i += 1
        elif kind == "word":
            last = [value]
            out.append(value)
            i += 1
        else:  # repetition
            if len(value) > 6:
                raise InputError(f"{where}: pattern: repetition *{value[:12]}... is too large")
            count = int(value)
            if last is None:
                raise InputError(f"{where}: pattern: repetition *{value} follows nothing")
            if count < 1:
                raise InputError(f"{where}: pattern: repetition count must be >= 1, got {count}")
            if len(out) + len(last) * (count - 1) > MAX_LAYERS:
                raise InputError(f"{where}: pattern expands to more than {MAX_LAYERS} layers")
            out.extend(last * (count - 1))
            last = None
            i += 1
    return out, i


def model_to_yaml(model: ModelSpec, description: str = "") -> str:
    """`model` as a latprof YAML config that `load_yaml_model` reads back to an equal ModelSpec:
    each distinct layer spec a named block with every parameter given, the layers a pattern."""
    names: dict[OpSpec, str] = {}
    blocks: dict[str, dict[str, Any]] = {}
    for spec in model.layers:
        if spec not in names:
            names[spec] = f"{spec.op}_{sum(1 for s in names if s.op == spec.op)}"
            blocks[names[spec]] = {"op": spec.op, **spec.params()}
    data: dict[str, Any] = {"name": model.name}
    if description:
        data["description"] = description
    data.update(
        width=model.width,
        vocab_size=model.vocab_size,
        tied_embeddings=model.tied_embeddings,
        meta_tokens=model.meta_tokens,
        blocks=blocks,
        pattern=" ".join(names[spec] for spec in model.layers),
    )
    if not model.norm_weights:
        data["norm_weights"] = False
    if model.max_positions is not None:
        data["max_positions"] = model.max_positions
    if model.weight_ties:
        data["weight_ties"] = [[layer, owner] for layer, owner in model.weight_ties]
    return yaml.safe_dump(data, sort_keys=False, width=100)
