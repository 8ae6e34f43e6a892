"""`ModelSpec`: a whole decoder as an ordered tuple of operator specs, plus embedding and LM head.

A model spec is frozen and dtype-independent.  The config loaders (`latprof.config_yaml`,
`latprof.config_hf`) build it; `latprof.model.load_model` picks the loader from the file name.
Nothing here imports torch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property, lru_cache

from latprof.errors import InputError

#: operators a model adds by itself from width and vocab_size; never listed among its layers
from latprof.registry import build_spec
from latprof.specs import OpSpec, StateBytes, dtype_bytes

IMPLICIT_OPS = ("embedding", "lm_head")


@lru_cache(maxsize=4096)
def _io_spec(op: str, width: int, vocab_size: int) -> OpSpec:
    """The embedding or LM head spec of a model (shared: many models have the same few)."""
    return build_spec(op, width, vocab_size=vocab_size)


@lru_cache(maxsize=65536)
def _spec_params(spec: OpSpec) -> int:
    """A layer spec's parameter count (shared by the many models of a search)."""
    return spec.param_count()


@lru_cache(maxsize=65536)
def _spec_shared_params(spec: OpSpec) -> int:
    """The part of a layer spec's parameters a tied use reuses from its owner."""
    return spec.shared_param_count()


@dataclass(frozen=True)
class ModelSpec:
    """A decoder: `layers` in order, each one operator block (pre-norm, mixer, residual add).

    A hybrid layer that runs two mixers side by side (Falcon-H1's attention + Mamba2) is two
    consecutive entries.  `meta_tokens` are learned tokens prepended to every sequence
    (Nemotron-Flash's `num_memory_tokens`): they lengthen every attention context and the KV cache.
    `notes` records what a loader approximated, so that it is printed rather than hidden.

    `weight_ties`: (layer, owner) pairs: layer `layer` reuses the shared weights of the earlier
    layer `owner`, of the same spec (Zamba2's shared attention blocks, cycled over its hybrid
    layers).  A tied layer's shared part (`OpSpec.shared_param_count`) is counted once, at its
    owner, in parameters and weight bytes; latency (the LUT sum) and caches still count every
    use, because every use runs and keeps its own state.
    """

    name: str
    width: int
    vocab_size: int
    layers: tuple[OpSpec, ...]
    tied_embeddings: bool = False
    meta_tokens: int = 0
    source: str | None = None
    notes: tuple[str, ...] = ()
    #: positions the model was trained for (HF `max_position_embeddings`), meta tokens included;
    #: None where the config does not say.  `latprof decode` refuses to generate beyond it.
    max_positions: int | None = None
    #: False where the model's norms carry no weights (OLMo's non-parametric LayerNorm): each
    #: block's pre-norm weights and the final norm's are then left out of the parameter count
    #: (the work of a norm, a few elementwise ops per token, is the same)
    norm_weights: bool = True
    weight_ties: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        for field_name in ("width", "vocab_size"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"{where}: {field_name} must be a positive integer, got {value!r}")
        if isinstance(self.meta_tokens, bool) or not isinstance(self.meta_tokens, int):
            raise InputError(f"{where}: meta_tokens must be an integer, got {self.meta_tokens!r}")
        if self.meta_tokens < 0:
            raise InputError(f"{where}: meta_tokens must be >= 0, got {self.meta_tokens}")
        if self.max_positions is not None and (
            isinstance(self.max_positions, bool)
            or not isinstance(self.max_positions, int)
            or self.max_positions <= 0
        ):
            raise InputError(f"{where}: max_positions must be a positive integer or absent")
        if not isinstance(self.norm_weights, bool):
            raise InputError(f"{where}: norm_weights must be true or false")
        if not isinstance(self.tied_embeddings, bool):
            raise InputError(f"{where}: tied_embeddings must be true or false")
        if not isinstance(self.layers, tuple) or not self.layers:
            raise InputError(f"{where}: the layer list is empty; a model needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, OpSpec):
                raise InputError(f"{where}: layer {i} is {layer!r}, not an operator spec")
            if layer.op in IMPLICIT_OPS:
                raise InputError(
                    f"{where}: layer {i} is {layer.op!r}; the embedding and LM head are added "
                    "from width and vocab_size, do not list them among the layers"
                )
            if layer.width != self.width:
                raise InputError(
                    f"{where}: layer {i} ({layer.key}) has width {layer.width}, the model "
                    f"{self.width}; every layer of a residual stream has the model's width"
                )
        if self.weight_ties:
            self._check_ties(where)

    def _check_ties(self, where: str) -> None:
        """Each tie (layer, owner): indices of this model's layers, owner earlier, the same spec
        with a shareable part, owner not itself tied, each layer tied once."""
        if not isinstance(self.weight_ties, tuple):
            raise InputError(f"{where}: weight_ties must be a tuple of (layer, owner) pairs")
        n = len(self.layers)
        tied: set[int] = set()
        for tie in self.weight_ties:
            if (
                not isinstance(tie, tuple)
                or len(tie) != 2
                or any(isinstance(i, bool) or not isinstance(i, int) for i in tie)
            ):
                raise InputError(
                    f"{where}: weight_ties entry {tie!r} is not a (layer, owner) pair of layer "
                    "indices"
                )
            layer, owner = tie
            if not (0 <= owner < n and 0 <= layer < n):
                raise InputError(
                    f"{where}: weight_ties entry ({layer}, {owner}) names a layer outside "
                    f"0..{n - 1} (the model has {n} layers, counted from 0)"
                )
            if owner >= layer:
                raise InputError(
                    f"{where}: weight_ties entry ({layer}, {owner}): the owner must be an "
                    "earlier layer than the layer that reuses its weights"
                )
            spec = self.layers[layer]
            if self.layers[owner] != spec:
                raise InputError(
                    f"{where}: weight_ties entry ({layer}, {owner}): layer {layer} is "
                    f"{spec.key} and layer {owner} {self.layers[owner].key}; only layers of "
                    "the same spec share weights"
                )
            if _spec_shared_params(spec) == 0:
                raise InputError(
                    f"{where}: weight_ties entry ({layer}, {owner}): {spec.op} has no weights a "
                    "use can share (operators with a shared part: shared_attention)"
                )
            if layer in tied:
                raise InputError(f"{where}: weight_ties ties layer {layer} twice")
            tied.add(layer)
        owners_tied = sorted({owner for _, owner in self.weight_ties} & tied)
        if owners_tied:
            raise InputError(
                f"{where}: weight_ties: layer {owners_tied[0]} reuses another layer's weights "
                "and is an owner too; tie every use to the first layer holding the weights"
            )

    # ---- derived specs -----------------------------------------------------------------------
    @property
    def embedding(self) -> OpSpec:
        return _io_spec("embedding", self.width, self.vocab_size)

    @property
    def lm_head(self) -> OpSpec:
        return _io_spec("lm_head", self.width, self.vocab_size)

    @cached_property
    def counts(self) -> dict[OpSpec, int]:
        """Distinct layer specs, in order of first appearance, with how often each occurs."""
        return dict(Counter(self.layers))

    def groups(self) -> list[tuple[OpSpec, list[int]]]:
        """Distinct layer specs in order of first appearance, each with its layer positions."""
        positions: dict[OpSpec, list[int]] = {}
        for i, layer in enumerate(self.layers):
            positions.setdefault(layer, []).append(i)
        return list(positions.items())

    # ---- sizes --------------------------------------------------------------------------------
    def param_count(self) -> int:
        """Parameters; tied embeddings are counted once (the LM head then adds its norm only)."""
        return self._param_count

    @cached_property
    def _param_count(self) -> int:
        layers = sum(_spec_params(spec) * n for spec, n in self.counts.items())
        head = self.lm_head.param_count()
        if self.tied_embeddings:
            head -= self.vocab_size * self.width
        if not self.norm_weights:  # every block's own pre-norm, and the final norm
            layers -= sum(spec.pre_norm_params() * n for spec, n in self.counts.items())
            head -= self.width
        for layer, _ in self.weight_ties:  # the shared part is its owner's
            spec = self.layers[layer]
            layers -= _spec_shared_params(spec)
            if not self.norm_weights:  # its norms, in the shared part, were subtracted above
                layers += spec.pre_norm_params()
        return layers + self.embedding.param_count() + head

    def weight_bytes(self, dtype: str) -> int:
        return self.param_count() * dtype_bytes(dtype)

    def state_bytes(self, batch: int, context: int, dtype: str) -> StateBytes:
        """Decode caches for `batch` sequences of up to `context` tokens (meta tokens added)."""
        total = StateBytes()
        for spec, n in self.counts.items():
            total = total + spec.state_bytes(batch, context + self.meta_tokens, dtype).scaled(n)
        return total

    def summary(self) -> str:
        ops = Counter(spec.op for spec in self.layers)
        return ", ".join(f"{n} {op}" for op, n in ops.items())
