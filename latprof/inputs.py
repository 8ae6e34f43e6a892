"""Reading what a user hands latprof, with bounds: files, JSON, YAML, numbers, output paths.

Everything a user can point latprof at goes through here, so that a mistake or a hostile file is
an `InputError` (exit 2, one paragraph) and never a traceback, a hang or a lost measurement:

- `read_text`: the path exists, is a regular file, is readable, is at most `max_bytes`, and is
  UTF-8 text (a binary or UTF-16 file is refused, naming the byte that gave it away);
- `parse_json` / `parse_yaml`: integers of at most `MAX_INT_DIGITS` digits, numbers of at most
  100 characters (Infinity stays legal, real configs hold it: `bounded_int` / `bounded_float`
  check a number where it is used), nesting at most `MAX_DEPTH` deep and at most `MAX_NODES`
  values *after* YAML aliases are expanded (an alias bomb is refused before anything walks it);
- `bounded_int` / `bounded_float`: finite, within [minimum, maximum], with the ceilings below;
- `check_output_path`: a path latprof will write is checked before any measuring starts: not a
  directory, not under /proc, /sys or /dev, its folder exists (or can be made) and is writable;
- `quote`: a value as an error message shows it, cut to `QUOTE_CHARS`.

Nothing here imports torch.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from latprof.errors import InputError

#: the largest config / spec file read (real config.json files are under 100 kB)
MAX_CONFIG_BYTES = 4 * 1024**2
#: the largest LUT read (a full sweep is about 1 MB)
MAX_LUT_BYTES = 512 * 1024**2
#: values in a parsed config after alias expansion, and their nesting depth
MAX_NODES = 200_000
MAX_DEPTH = 64
MAX_INT_DIGITS = 19
#: a shape dimension (width, heads, vocab_size, ffn_dim, ...); the largest vocabularies are ~256k
MAX_SIZE = 2**24
#: operator layers in one model (the deepest published decoders have under 200 blocks)
MAX_LAYERS = 10_000
#: batch sizes and cache lengths
MAX_BATCH = 2**20
MAX_CONTEXT = 2**24
#: CPU threads (`--threads`)
MAX_THREADS = 4096
#: timed samples (`--samples`): at least 3 for p10 / p90
MIN_SAMPLES, MAX_SAMPLES = 3, 100_000
#: device memory in GB (`--device-memory`)
MAX_DEVICE_MEMORY_GB = 1e6
#: characters of a value quoted in an error message
QUOTE_CHARS = 60

_REFUSED_PREFIXES = ("/proc", "/sys", "/dev")


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """`repr(value)` cut to `limit` characters, for error messages (never walks a huge value:
    containers are described, not printed, past the limit)."""
    if isinstance(value, list | tuple | dict | set) and _size_at_least(value, limit):
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value) if not isinstance(value, int) or _int_small(value) else "<huge integer>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _int_small(value: int) -> bool:
    return -(10**MAX_INT_DIGITS) < value < 10**MAX_INT_DIGITS


def _size_at_least(value: Any, n: int) -> bool:
    """Whether `value` holds at least `n` values, walking at most `n` of them."""
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen >= n:
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return False


# ---- files -------------------------------------------------------------------------------------
def read_text(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of the file `what` (a config, a LUT, ...) at `path`, checked first."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file")
    size = path.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{what} {path} is {size:,} bytes, over the {max_bytes:,}-byte limit for a {what}"
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return decode_text(data, path, what)


def decode_text(data: bytes, path: str | Path, what: str) -> str:
    """Bytes of a text file -> str; binary, UTF-16 or other non-UTF-8 content is refused."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:
        raise InputError(
            f"{what} {path} is not UTF-8 text (it looks like UTF-16 or a binary file); save it "
            "as UTF-8"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); "
            "save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{what} {path} holds NUL bytes: a binary file, not text")
    return text.removeprefix("\ufeff")


# ---- structured data ---------------------------------------------------------------------------
def check_shape(data: Any, source: str) -> Any:
    """`data` nests at most MAX_DEPTH deep and holds at most MAX_NODES values, counting each
    use of a shared (aliased) value again; walks at most MAX_NODES values."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    nodes = 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise InputError(
                f"{source}: more than {MAX_NODES:,} values (YAML aliases counted as expanded); "
                "a config is far smaller"
            )
        if depth > MAX_DEPTH:
            raise InputError(f"{source}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
            stack.extend((k, depth + 1) for k in item)
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return data


def _json_int(source: str):
    def parse(text: str) -> int:
        if len(text.lstrip("-")) > MAX_INT_DIGITS:
            raise InputError(f"{source}: an integer of {len(text):,} digits ({quote(text)})")
        return int(text)

    return parse


def _json_float(source: str):
    def parse(text: str) -> float:
        if len(text) > 100:
            raise InputError(f"{source}: a number of {len(text):,} characters ({quote(text)})")
        return float(text)  # may overflow to inf: checked where a number is used

    return parse


def parse_json(text: str, source: str) -> Any:
    """JSON with bounded integers, finite floats, bounded depth and size."""
    if _bracket_depth(text) > MAX_DEPTH:
        raise InputError(f"{source}: nested more than {MAX_DEPTH} levels deep")
    try:
        data = json.loads(
            text,
            parse_int=_json_int(source),
            parse_float=_json_float(source),
        )
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}") from None
    except RecursionError:
        raise InputError(f"{source}: nested too deeply") from None
    return check_shape(data, source)


def _bracket_depth(text: str) -> int:
    """Upper bound of the nesting depth of JSON `text` (brackets inside strings counted too,
    which only over-counts); stops counting past MAX_DEPTH."""
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > MAX_DEPTH:
                    return best
        elif ch in "]}":
            depth -= 1
    return best


class BoundedLoader(yaml.SafeLoader):
    """A SafeLoader whose integers are bounded in digits and whose floats are finite; depth and
    expanded size are checked by `parse_yaml` after construction (aliases share one object, so
    construction itself stays small)."""

    source = "<yaml>"

    def construct_yaml_int(self, node: yaml.Node) -> int:
        text = str(node.value).replace("_", "")
        if len(text.lstrip("+-")) > MAX_INT_DIGITS + 2:  # 0x / 0o prefixes
            raise InputError(
                f"{self.source}:{node.start_mark.line + 1}: an integer of {len(text):,} digits "
                f"({quote(text)})"
            )
        return yaml.SafeLoader.construct_yaml_int(self, node)

    def construct_yaml_float(self, node: yaml.Node) -> float:
        if len(str(node.value)) > 100:
            raise InputError(
                f"{self.source}:{node.start_mark.line + 1}: a number of {len(node.value):,} "
                "characters"
            )
        return yaml.SafeLoader.construct_yaml_float(
            self, node
        )  # inf / nan: checked where a number is used


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)


def bounded_loader(base: type[yaml.SafeLoader], source: str) -> type[yaml.SafeLoader]:
    """A loader class of `base` (a SafeLoader subclass with its own constructors) with the
    bounded number constructors; `source` names the file in errors."""

    class Loader(base):  # type: ignore[valid-type, misc]
        pass

    Loader.source = source  # type: ignore[attr-defined]
    for tag, fn in (
        ("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int),
        ("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float),
    ):
        Loader.add_constructor(tag, fn)
    return Loader


def parse_yaml(text: str, source: str, loader: type[yaml.SafeLoader] | None = None) -> Any:
    """YAML through a safe loader with bounded numbers; malformed YAML, deep nesting and alias
    bombs are InputErrors naming `source`."""
    cls = bounded_loader(loader or yaml.SafeLoader, source)
    try:
        data = yaml.load(text, Loader=cls)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise InputError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: malformed YAML: {exc}") from None
    except RecursionError:
        raise InputError(f"{source}: nested too deeply") from None
    return check_shape(data, source)


# ---- numbers -----------------------------------------------------------------------------------
def bounded_int(value: Any, name: str, minimum: int = 1, maximum: int = MAX_SIZE) -> int:
    """An integer in [minimum, maximum] (a float that is an integer is accepted)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name}: expected an integer, got {quote(value)}")
    if not minimum <= value <= maximum:
        raise InputError(f"{name}: must be between {minimum:,} and {maximum:,}, got {quote(value)}")
    return value


def bounded_float(value: Any, name: str, minimum: float = 0.0, maximum: float = 1e18) -> float:
    """A finite number in (minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{name}: expected a number, got {quote(value)}")
    if isinstance(value, int) and not _int_small(value):
        raise InputError(f"{name}: {quote(value)} is out of range")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name}: must be a finite number, got {value}")
    if value <= minimum == 0:
        raise InputError(f"{name}: must be positive, got {value:g}")
    if not minimum < value <= maximum:
        raise InputError(
            f"{name}: must be above {minimum:g} and at most {maximum:g}, got {value:g}"
        )
    return value


def samples(value: int | None, flag: str = "--samples") -> int | None:
    """`--samples` of every command: None (the default) or MIN_SAMPLES..MAX_SAMPLES."""
    if value is None:
        return None
    if not MIN_SAMPLES <= value <= MAX_SAMPLES:
        raise InputError(
            f"{flag} must be between {MIN_SAMPLES} (for p10/p90) and {MAX_SAMPLES:,}, "
            f"got {quote(value)}"
        )
    return value


def threads(value: int | None, flag: str = "--threads") -> int | None:
    """`--threads` of every command: None (all cores) or 1..MAX_THREADS."""
    if value is None:
        return None
    if not 1 <= value <= MAX_THREADS:
        raise InputError(f"{flag} must be between 1 and {MAX_THREADS:,}, got {quote(value)}")
    return value


# ---- output paths ------------------------------------------------------------------------------
def check_output_path(
    path: str | Path, flag: str, suffixes: tuple[str, ...] = (), siblings: tuple[Path, ...] = ()
) -> Path:
    """Check, before any measuring, that latprof can write `path` (given with `flag`).

    Refused: a path under /proc, /sys or /dev; a directory; something that is not a regular
    file; a folder that cannot be made or written; a file that cannot be opened for writing;
    a suffix not in `suffixes` (when given).  `siblings`: files written beside it (a LUT's
    `.json` sidecar and `.lock`), which must not be directories either.  The folder is created
    if missing (as writing would); nothing else is changed."""
    path = Path(path)
    shown = quote(str(path), 120)
    absolute = Path(os.path.abspath(path))
    resolved = absolute.resolve() if absolute.exists() or absolute.is_symlink() else absolute
    for p in (absolute, resolved):
        if any(str(p) == pre or str(p).startswith(pre + "/") for pre in _REFUSED_PREFIXES):
            raise InputError(f"{flag} {shown}: latprof does not write under /proc, /sys or /dev")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(
            f"{flag} {shown}: unsupported file type {path.suffix or '(none)'!r}; use one of "
            f"{', '.join(suffixes)}"
        )
    for target in (path, *siblings):
        if target.is_dir():
            raise InputError(f"{flag} {shown}: {target} is a directory; give a file path")
        if target.exists() and not target.is_file():
            raise InputError(f"{flag} {shown}: {target} is not a regular file")
    parent = absolute.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{flag} {shown}: cannot create its folder {parent} ({exc.strerror or exc})"
        ) from None
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as exc:
            raise InputError(f"{flag} {shown}: cannot write it ({exc.strerror or exc})") from None
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".latprof-write-check-"):
            pass
    except OSError as exc:
        raise InputError(
            f"{flag} {shown}: cannot write in its folder {parent} ({exc.strerror or exc})"
        ) from None
    return path


#: file types matplotlib writes (`--plot`)
PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff")


def check_plot_path(path: str | Path | None, flag: str = "--plot") -> Path | None:
    """A figure latprof will write, checked before anything is measured (see
    `check_output_path`); its suffix must be one matplotlib writes."""
    if path is None:
        return None
    return check_output_path(path, flag, suffixes=PLOT_SUFFIXES)


def check_output_dir(path: str | Path | None, flag: str) -> Path | None:
    """A folder latprof will write files into: not under /proc, /sys or /dev, not a file, and
    writable (created if missing)."""
    if path is None:
        return None
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {quote(str(path), 120)} is a file; give a folder")
    check_output_path(path / ".latprof-probe", flag)
    return path
