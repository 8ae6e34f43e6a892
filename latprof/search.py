"""Latency-constrained evolutionary search over hybrid operator mixes (the paper's Algorithm 1).

A *space* (YAML, docs/search.md) says which widths, how many blocks, which mixers, how many FFNs
per block, which parameter choices per mixer, which mixer ratios and which constraints are allowed.
A candidate is a `Genome`: a width, one mixer and an FFN count per block, one parameter choice
per mixer family.  Its latency is the LUT's decode latency of T tokens after P
(`Estimator.decode_latency_us`); a candidate over the budget, breaking a constraint, or one the LUT
cannot answer is rejected and counted.  Search: regularized (aging) evolution (Real et al. 2019,
arXiv 1802.01548): a population of N, each step a tournament of S picks the parent, a child by
mutation (one block's mixer, one FFN count, the width, a parameter choice, or a block added or
removed) or crossover, the oldest member leaves.  Seeded: the same seed gives the same search.

Scores are pluggable and higher is better unless `minimize`: `params` (a proxy, nothing more), a
Python callable given the candidate's ModelSpec, or a command given the candidate's YAML path that
prints one number.  Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import random
import re
import shlex
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from latprof.config_yaml import read_yaml
from latprof.errors import InputError
from latprof.estimate import Estimator, MissingSpecs
from latprof.model_spec import ModelSpec
from latprof.registry import OPERATOR_NAMES, build_spec
from latprof.specs import OpSpec

SPACE_KEYS = (
    "name",
    "description",
    "widths",
    "blocks",
    "mixers",
    "ffn_per_block",
    "params",
    "ratios",
    "vocab_size",
    "tied_embeddings",
    "meta_tokens",
    "max_operators",
    "constraints",
    "ffn",
)
CONSTRAINT_KEYS = (
    "max_attention_layers",
    "max_kv_cache_bytes",
    "kv_cache_context",
    "max_params",
    "min_params",
)


# ---- the space ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Space:
    name: str
    widths: tuple[int, ...]
    blocks: tuple[int, int]  # min, max blocks
    mixers: tuple[str, ...]
    ffn_per_block: tuple[int, ...]
    params: dict[str, tuple[dict[str, Any], ...]]  # mixer -> parameter choices (product)
    ratios: tuple[tuple[int, int], ...]  # between mixers[0] and mixers[1]; () = free
    vocab_size: int = 32000
    tied_embeddings: bool = True
    meta_tokens: int = 0
    max_operators: int | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    ffn: dict[str, Any] = field(default_factory=dict)
    _specs: dict[tuple[str, int, int], OpSpec] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def load(cls, path: str | Path) -> Space:
        path = Path(path)
        data = read_yaml(path)
        where = str(path)
        if not isinstance(data, dict):
            raise InputError(f"{where}: a search space is a YAML mapping (docs/search.md)")
        unknown = sorted(str(k) for k in data if k not in SPACE_KEYS)
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(SPACE_KEYS)}"
            )
        widths = _ints(data.get("widths"), f"{where}: widths")
        blocks = data.get("blocks", {"min": 1, "max": 8})
        if not isinstance(blocks, dict) or set(blocks) - {"min", "max"}:
            raise InputError(f"{where}: blocks is a mapping {{min: N, max: M}}")
        lo, hi = (
            _int(blocks.get("min", 1), f"{where}: blocks.min"),
            _int(blocks.get("max", 8), f"{where}: blocks.max"),
        )
        if lo > hi:
            raise InputError(f"{where}: blocks.min {lo} is above blocks.max {hi}: an empty space")
        mixers = tuple(data.get("mixers") or ())
        if not mixers:
            raise InputError(
                f"{where}: mixers lists at least one operator (e.g. [attention, mamba2])"
            )
        for m in mixers:
            if m not in OPERATOR_NAMES or m in ("ffn", "embedding", "lm_head"):
                raise InputError(
                    f"{where}: mixer {m!r} is not a mixer family; valid: "
                    + ", ".join(
                        o for o in OPERATOR_NAMES if o not in ("ffn", "embedding", "lm_head")
                    )
                )
        ffns = _ints(data.get("ffn_per_block", [1]), f"{where}: ffn_per_block", minimum=0)
        params: dict[str, tuple[dict[str, Any], ...]] = {}
        for op, choices in (data.get("params") or {}).items():
            if op not in mixers:
                raise InputError(f"{where}: params.{op}: {op} is not among the mixers")
            if not isinstance(choices, dict):
                raise InputError(f"{where}: params.{op} maps parameter -> list of choices")
            keys = list(choices)
            values = [v if isinstance(v, list) else [v] for v in choices.values()]
            params[op] = tuple(dict(zip(keys, c, strict=True)) for c in itertools.product(*values))
        ratios = tuple(_ratio(r, where) for r in data.get("ratios") or ())
        if ratios and len(mixers) != 2:
            raise InputError(f"{where}: ratios are between two mixers; give exactly two mixers")
        constraints = dict(data.get("constraints") or {})
        bad = sorted(set(constraints) - set(CONSTRAINT_KEYS))
        if bad:
            raise InputError(
                f"{where}: unknown constraint(s) {', '.join(bad)}; valid: "
                f"{', '.join(CONSTRAINT_KEYS)}"
            )
        for k, v in constraints.items():
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
            ):
                raise InputError(f"{where}: constraints.{k} must be a number >= 0, got {v!r}")
        space = cls(
            str(data.get("name") or path.stem),
            widths,
            (lo, hi),
            mixers,
            ffns,
            params,
            ratios,
            _int(data.get("vocab_size", 32000), f"{where}: vocab_size"),
            bool(data.get("tied_embeddings", True)),
            _int(data.get("meta_tokens", 0), f"{where}: meta_tokens", minimum=0),
            None
            if data.get("max_operators") is None
            else _int(data["max_operators"], f"{where}: max_operators"),
            constraints,
            dict(data.get("ffn") or {}),
        )
        space.check_feasible(where)
        return space

    def spec(self, op: str, width: int, choice: int) -> OpSpec:
        """The spec of `op` at `width` with parameter choice `choice` (cached: a search builds
        the same few specs again and again)."""
        key = (op, width, choice)
        found = self._specs.get(key)
        if found is None:
            params = self.ffn if op == "ffn" else self.params.get(op, ({},))[choice]
            found = self._specs[key] = build_spec(op, width, **params)
        return found

    def check_feasible(self, where: str) -> None:
        """The smallest candidate must fit max_operators; every width must build every op."""
        smallest = self.blocks[0] * (1 + min(self.ffn_per_block))
        if self.max_operators is not None and smallest > self.max_operators:
            raise InputError(
                f"{where}: contradictory space: {self.blocks[0]} blocks of at least "
                f"{1 + min(self.ffn_per_block)} operators exceed max_operators {self.max_operators}"
            )
        for w in self.widths:
            for m in self.mixers:
                for choice in self.params.get(m, ({},)):
                    try:
                        build_spec(m, w, **choice)
                    except InputError as exc:
                        raise InputError(f"{where}: {m} at width {w} ({choice}): {exc}") from None


def _int(v: Any, what: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}, got {v!r}")
    return v


def _ints(v: Any, what: str, minimum: int = 1) -> tuple[int, ...]:
    if not isinstance(v, list) or not v:
        raise InputError(f"{what}: give a non-empty list")
    return tuple(sorted({_int(x, what, minimum) for x in v}))


def _ratio(text: Any, where: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not m or m.groups() == ("0", "0"):
        raise InputError(f"{where}: ratio {text!r} is not a:b (e.g. 1:3)")
    return int(m.group(1)), int(m.group(2))


# ---- candidates ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Genome:
    width: int
    blocks: tuple[tuple[str, int], ...]  # (mixer, FFNs after it) per block
    choices: tuple[tuple[str, int], ...]  # mixer -> index into space.params[mixer]

    @cached_property
    def key(self) -> str:
        body = " ".join(f"{m}+{n}" for m, n in self.blocks)
        opts = ",".join(f"{m}={i}" for m, i in self.choices)
        return f"w{self.width}[{body}]{{{opts}}}"

    def model(self, space: Space) -> ModelSpec:
        chosen = dict(self.choices)
        specs = {m: space.spec(m, self.width, chosen.get(m, 0)) for m, _ in self.blocks}
        ffn = space.spec("ffn", self.width, 0)
        layers: list[OpSpec] = []
        for mixer, n in self.blocks:
            layers.append(specs[mixer])
            layers.extend([ffn] * n)
        return ModelSpec(
            f"{space.name}-{_short(self.key)}",
            self.width,
            space.vocab_size,
            tuple(layers),
            space.tied_embeddings,
            space.meta_tokens,
            source=f"search space {space.name}: {self.key}",
        )


def _short(key: str) -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def violation(g: Genome, space: Space, model: ModelSpec) -> str | None:
    """Why `g` breaks the space's rules or constraints; None if it does not."""
    n_ops = len(model.layers)
    if space.max_operators is not None and n_ops > space.max_operators:
        return f"{n_ops} operators > max_operators {space.max_operators}"
    if space.ratios:
        a = sum(1 for m, _ in g.blocks if m == space.mixers[0])
        b = len(g.blocks) - a
        if not any(a * rb == b * ra for ra, rb in space.ratios):
            return f"mixer ratio {a}:{b} not allowed"
    c = space.constraints
    attn = sum(1 for s in model.layers if s.op == "attention")
    if "max_attention_layers" in c and attn > c["max_attention_layers"]:
        return f"{attn} attention layers > {c['max_attention_layers']:g}"
    if "max_kv_cache_bytes" in c:
        ctx = int(c.get("kv_cache_context", 8192))
        kv = model.state_bytes(1, ctx, "bfloat16").kv_cache
        if kv > c["max_kv_cache_bytes"]:
            return f"KV cache {kv:.3g} B at context {ctx} (bf16) > {c['max_kv_cache_bytes']:g}"
    params = model.param_count() if ("max_params" in c or "min_params" in c) else 0
    if "max_params" in c and params > c["max_params"]:
        return f"{params:.3g} params > max_params {c['max_params']:g}"
    if "min_params" in c and params < c["min_params"]:
        return f"{params:.3g} params < min_params {c['min_params']:g}"
    return None


def random_genome(space: Space, rng: random.Random) -> Genome:
    n = rng.randint(*space.blocks)
    blocks = tuple((rng.choice(space.mixers), rng.choice(space.ffn_per_block)) for _ in range(n))
    return Genome(rng.choice(space.widths), blocks, _random_choices(space, rng))


def _random_choices(space: Space, rng: random.Random) -> tuple[tuple[str, int], ...]:
    return tuple((m, rng.randrange(len(space.params[m]))) for m in sorted(space.params))


def mutate(g: Genome, space: Space, rng: random.Random) -> Genome:
    """One change: a block's mixer, a block's FFN count, the width, a parameter choice, or a block
    added (a copy of one) or removed."""
    blocks = list(g.blocks)
    kinds = ["mixer", "ffn", "width", "add", "remove"] + (["param"] if space.params else [])
    kind = rng.choice(kinds)
    if kind == "mixer":
        i = rng.randrange(len(blocks))
        blocks[i] = (rng.choice(space.mixers), blocks[i][1])
    elif kind == "ffn":
        i = rng.randrange(len(blocks))
        blocks[i] = (blocks[i][0], rng.choice(space.ffn_per_block))
    elif kind == "width":
        return Genome(rng.choice(space.widths), g.blocks, g.choices)
    elif kind == "add" and len(blocks) < space.blocks[1]:
        blocks.insert(rng.randrange(len(blocks) + 1), rng.choice(blocks))
    elif kind == "remove" and len(blocks) > space.blocks[0]:
        blocks.pop(rng.randrange(len(blocks)))
    elif kind == "param":
        choices = dict(g.choices)
        m = rng.choice(sorted(space.params))
        choices[m] = rng.randrange(len(space.params[m]))
        return Genome(g.width, g.blocks, tuple(sorted(choices.items())))
    return Genome(g.width, tuple(blocks), g.choices)


def crossover(a: Genome, b: Genome, space: Space, rng: random.Random) -> Genome:
    """A prefix of one parent's blocks and a suffix of the other's; width and choices from
    either parent."""
    cut_a, cut_b = rng.randint(0, len(a.blocks)), rng.randint(0, len(b.blocks))
    blocks = (a.blocks[:cut_a] + b.blocks[cut_b:]) or a.blocks[:1]
    blocks = blocks[: space.blocks[1]]
    while len(blocks) < space.blocks[0]:
        blocks += (rng.choice(a.blocks),)
    return Genome(rng.choice((a.width, b.width)), blocks, rng.choice((a.choices, b.choices)))


# ---- scores ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    """`params`, `python:module:function` (called with the ModelSpec) or `cmd:COMMAND` (run with
    the candidate's YAML path appended, or in place of `{config}`; its last number on stdout)."""

    spec: str
    timeout_s: float = 600.0

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0] if ":" in self.spec else self.spec

    def check(self) -> None:
        if self.spec == "params":
            return
        if self.kind == "python":
            self._callable()
            return
        if self.kind == "cmd" and self.spec[4:].strip():
            return
        raise InputError(
            f'--score {self.spec!r}: give params, python:module:function or cmd:"COMMAND"'
        )

    def _callable(self) -> Callable[[ModelSpec], float]:
        import importlib

        try:
            _, module, name = self.spec.split(":", 2)
            return getattr(importlib.import_module(module), name)
        except (ValueError, ImportError, AttributeError) as exc:
            raise InputError(f"--score {self.spec!r}: cannot load it ({exc})") from None

    def __call__(self, model: ModelSpec, config_path: Path) -> float:
        """The score, or raises ScoreFailed with why."""
        if self.spec == "params":
            return float(model.param_count())
        if self.kind == "python":
            try:
                value = float(self._callable()(model))
            except Exception as exc:  # the user's function: any failure is that candidate's
                raise ScoreFailed(f"{type(exc).__name__}: {exc}") from None
            return _finite(value)
        command = self.spec[4:].strip()
        argv = shlex.split(command.replace("{config}", shlex.quote(str(config_path))))
        if "{config}" not in command:
            argv.append(str(config_path))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise ScoreFailed(f"timed out after {self.timeout_s:g} s") from None
        except OSError as exc:
            raise ScoreFailed(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        if done.returncode != 0:
            raise ScoreFailed(f"exit {done.returncode}: {done.stderr.strip()[-200:]}")
        numbers = re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", done.stdout)
        if not numbers:
            raise ScoreFailed(f"printed no number: {done.stdout.strip()[-200:]!r}")
        return _finite(float(numbers[-1]))


class ScoreFailed(Exception):
    pass


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ScoreFailed(f"not a finite number: {v}")
    return v


# ---- the search ------------------------------------------------------------------------------
@dataclass
class Candidate:
    key: str
    genome: Genome
    latency_s: float | None
    params: int
    status: str  # ok | over_budget | constraint | outside_lut | score_failed
    score: float | None = None
    why: str = ""
    operators: int = 0

    def as_json(self) -> dict[str, Any]:
        g = self.genome
        return {
            "key": self.key,
            "width": g.width,
            "blocks": [list(b) for b in g.blocks],
            "choices": dict(g.choices),
            "latency_s": self.latency_s,
            "params": self.params,
            "status": self.status,
            "score": self.score,
            "why": self.why,
            "operators": self.operators,
        }


@dataclass
class SearchResult:
    space: str
    budget_s: float
    score: str
    minimize: bool
    evaluated: int
    counts: dict[str, int]
    front: list[Candidate]
    top: list[Candidate]
    cheapest_s: float | None
    resumed: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "budget_s": self.budget_s,
            "score": self.score,
            "minimize": self.minimize,
            "evaluated": self.evaluated,
            "counts": self.counts,
            "resumed_from_journal": self.resumed,
            "cheapest_latency_s": self.cheapest_s,
            "pareto_front": [c.as_json() for c in self.front],
            "top": [c.as_json() for c in self.top],
        }


class Search:
    """Aging evolution under a latency budget; see the module docstring."""

    def __init__(
        self,
        space: Space,
        estimator: Estimator,
        *,
        budget_s: float,
        batch: int = 1,
        prompt: int = 0,
        generate: int = 1,
        score: Score | None = None,
        minimize: bool = False,
        population: int = 32,
        tournament: int = 8,
        seed: int = 0,
        jobs: int = 1,
        out: Path | None = None,
        crossover_rate: float = 0.25,
    ) -> None:
        if population < 2 or tournament < 1 or tournament > population:
            raise InputError("--population must be >= 2 and the tournament between 1 and it")
        if not math.isfinite(budget_s) or budget_s <= 0:
            raise InputError(f"the latency budget must be positive, got {budget_s}")
        self.space, self.est, self.budget_s = space, estimator, budget_s
        self.query = (batch, prompt, generate)
        self.score = score or Score("params")
        self.minimize, self.population, self.tournament = minimize, population, tournament
        self.rng, self.jobs, self.out = random.Random(seed), max(1, jobs), out
        self.crossover_rate = crossover_rate
        self.seen: dict[str, Candidate] = {}
        self.journal: dict[str, dict[str, Any]] = {}
        self.resumed = 0
        if out is not None:
            self._open_journal(out)

    # -- journal: score results by candidate, so a killed search resumes where it stopped --
    def _open_journal(self, out: Path) -> None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"--out {out}: cannot create it ({exc.strerror})") from None
        self.journal_path = out / "journal.jsonl"
        if self.journal_path.exists():
            for line in self.journal_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.journal[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn last line of a killed search
            self.resumed = len(self.journal)

    def _record(self, c: Candidate) -> None:
        if self.out is None or c.key in self.journal:
            return
        entry = {"key": c.key, "score": c.score, "status": c.status, "why": c.why}
        self.journal[c.key] = entry
        with open(self.journal_path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()

    # -- evaluation --
    def latency(self, g: Genome) -> Candidate:
        """Latency and rules of a candidate (no score yet); cached per candidate."""
        if g.key in self.seen:
            return self.seen[g.key]
        model = g.model(self.space)
        c = Candidate(g.key, g, None, model.param_count(), "ok", operators=len(model.layers))
        why = violation(g, self.space, model)
        if why:
            c.status, c.why = "constraint", why
        else:
            try:
                c.latency_s = self.est.decode_latency_us(model, *self.query) / 1e6
                if c.latency_s > self.budget_s:
                    c.status = "over_budget"
            except MissingSpecs as exc:
                c.status, c.why = "outside_lut", str(exc)[:200]
        self.seen[g.key] = c
        return c

    def _score_all(self, cands: list[Candidate]) -> None:
        todo = []
        for c in cands:
            if c.status != "ok" or c.score is not None:
                continue
            cached = self.journal.get(c.key)
            if cached is not None:
                c.score, c.status, c.why = cached["score"], cached["status"], cached["why"]
            else:
                todo.append(c)
        if not todo:
            return

        def run(c: Candidate) -> None:
            model = c.genome.model(self.space)
            path = self._config_path(c, model)
            try:
                c.score = self.score(model, path)
            except ScoreFailed as exc:
                c.status, c.why = "score_failed", str(exc)

        if self.jobs == 1 or self.score.spec == "params":
            for c in todo:
                run(c)
        else:
            with ThreadPoolExecutor(self.jobs) as pool:
                list(pool.map(run, todo))
        for c in todo:
            self._record(c)

    def _config_path(self, c: Candidate, model: ModelSpec) -> Path:
        if self.score.kind != "cmd":
            return Path("-")
        from latprof.config_yaml import model_to_yaml

        folder = (self.out or Path(".")) / "candidates"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{model.name}.yaml"
        path.write_text(model_to_yaml(model, f"search candidate {c.key}"))
        return path

    def fitness(self, c: Candidate) -> float:
        if c.status != "ok" or c.score is None:
            return -math.inf
        return -c.score if self.minimize else c.score

    def _valid(self, make: Callable[[], Genome], tries: int = 200) -> Candidate | None:
        """A candidate within the rules and the budget, from `make`; None after `tries`."""
        for _ in range(tries):
            c = self.latency(make())
            if c.status == "ok":
                return c
        return None

    # -- the loop --
    def run(
        self, generations: int, on_progress: Callable[[int, int, str], None] | None = None
    ) -> SearchResult:
        total = generations * self.population
        pop: list[Candidate] = []
        while len(pop) < self.population:
            batch = [
                self._valid(lambda: random_genome(self.space, self.rng))
                for _ in range(min(self.jobs, self.population - len(pop)))
            ]
            batch = [c for c in batch if c is not None]
            if not batch:
                break
            self._score_all(batch)
            pop += batch
        if not pop:
            raise self._nothing_fits()
        done = 0
        while done < total:
            children = []
            for _ in range(min(self.jobs, total - done)):
                sample = self.rng.sample(pop, min(self.tournament, len(pop)))
                parent = max(sample, key=self.fitness)
                if self.rng.random() < self.crossover_rate and len(sample) > 1:
                    other = sorted(sample, key=self.fitness)[-2]
                    child = self._valid(
                        lambda p=parent, o=other: crossover(
                            p.genome, o.genome, self.space, self.rng
                        )
                    )
                else:
                    child = self._valid(lambda p=parent: mutate(p.genome, self.space, self.rng))
                if child is not None:
                    children.append(child)
            done += max(1, len(children))
            self._score_all(children)
            for child in children:
                pop.append(child)
                pop.pop(0)  # the oldest leaves (aging)
            if on_progress:
                best = max(pop, key=self.fitness)
                on_progress(min(done, total), total, f"best {best.score}")
        return self._result()

    def _nothing_fits(self) -> InputError:
        lat = [c.latency_s for c in self.seen.values() if c.latency_s is not None]
        counts = self._counts()
        cheapest = f"; the cheapest latency found was {min(lat):.4g} s" if lat else ""
        return InputError(
            f"no candidate of space {self.space.name} meets the budget of {self.budget_s:g} s and "
            f"its constraints ({', '.join(f'{k}: {v}' for k, v in counts.items())}){cheapest}"
        )

    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.seen.values():
            counts[c.status] = counts.get(c.status, 0) + 1
        return counts

    def _result(self) -> SearchResult:
        scored = [c for c in self.seen.values() if c.status == "ok" and c.score is not None]
        failed = [c for c in self.seen.values() if c.status == "score_failed"]
        if not scored and failed:
            raise InputError(
                f"the score {self.score.spec!r} failed for every candidate within the budget "
                f"({len(failed)}); the first: {failed[0].why}"
            )
        front = pareto_front(scored, self.minimize)
        top, kinds = [], set()
        for c in sorted(scored, key=self.fitness, reverse=True):
            # blocks in another order with the same score: the same model for latency and size
            kind = (c.genome.width, tuple(sorted(c.genome.blocks)), c.genome.choices, c.score)
            if kind not in kinds:
                kinds.add(kind)
                top.append(c)
            if len(top) == 5:
                break
        lat = [c.latency_s for c in self.seen.values() if c.latency_s is not None]
        return SearchResult(
            self.space.name,
            self.budget_s,
            self.score.spec,
            self.minimize,
            len(self.seen),
            self._counts(),
            front,
            top,
            min(lat) if lat else None,
            self.resumed,
        )


def pareto_front(cands: Sequence[Candidate], minimize: bool) -> list[Candidate]:
    """Candidates no other beats on both latency (lower) and score; by latency."""

    def better(a: float, b: float) -> bool:
        return a < b if minimize else a > b

    ordered = sorted(cands, key=lambda c: (c.latency_s, -c.score if not minimize else c.score))
    front: list[Candidate] = []
    for c in ordered:
        if not front or better(c.score, front[-1].score):
            front.append(c)
    return front


def write_outputs(result: SearchResult, search: Search, out: Path) -> list[Path]:
    """front.csv, front.png (if matplotlib), summary.json and the top candidates' YAML configs."""
    import csv

    from latprof.config_yaml import model_to_yaml

    written = []
    with open(out / "front.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "latency_s", "score", "params", "operators", "width", "blocks"])
        for c in result.front:
            w.writerow(
                [
                    c.key,
                    f"{c.latency_s:.6g}",
                    c.score,
                    c.params,
                    c.operators,
                    c.genome.width,
                    len(c.genome.blocks),
                ]
            )
    written.append(out / "front.csv")
    (out / "summary.json").write_text(json.dumps(result.as_json(), indent=2) + "\n")
    written.append(out / "summary.json")
    top = out / "top"
    top.mkdir(exist_ok=True)
    for rank, c in enumerate(result.top, 1):
        model = c.genome.model(search.space)
        path = top / f"{rank:02d}-{model.name}.yaml"
        path.write_text(
            model_to_yaml(
                model, f"search rank {rank}: {c.key}, latency {c.latency_s:.4g} s, score {c.score}"
            )
        )
        written.append(path)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    scored = [c for c in search.seen.values() if c.status == "ok" and c.score is not None]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(
        [c.latency_s for c in scored],
        [c.score for c in scored],
        s=8,
        c="0.7",
        label="within budget",
    )
    ax.plot(
        [c.latency_s for c in result.front],
        [c.score for c in result.front],
        "o-",
        label="Pareto front",
    )
    ax.axvline(result.budget_s, ls="--", c="k", lw=0.8, label="budget")
    ax.set(
        xlabel="decode latency (s, LUT)",
        ylabel=f"score ({result.score})",
        title=f"search {result.space}: {result.evaluated} candidates",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "front.png", dpi=110)
    plt.close(fig)
    written.append(out / "front.png")
    return written
