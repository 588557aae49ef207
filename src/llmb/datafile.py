"""Reading YAML data files into pydantic models, with one-line errors naming the file and the
field (``toy.yaml: sizes.1b.layouts[0].gpus: Input should be a valid integer (got '8')``), and
writing JSON files atomically."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llmb.errors import LlmbError

M = TypeVar("M", bound=BaseModel)
# libyaml's parser is several times faster than the pure-Python one (the catalog is read by
# every command); both are safe loaders.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_validation_error(name: str, err: ValidationError) -> str:
    first = err.errors()[0]
    first = {**first, "msg": first["msg"].removeprefix("Value error, ")}
    loc = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]).replace(".[", "[")
    value = first.get("input")
    got = f" (got {value!r})" if "input" in first and not isinstance(value, (dict, list)) else ""
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{name}: {loc + ': ' if loc else ''}{first['msg']}{got}{more}"


#: Limits of every YAML file llmb reads (catalog, proxies, cluster configuration, bulk specs):
#: none of llmb's own files comes near them, and they stop a hostile or broken file (an alias
#: "bomb" expands exponentially; a 5000-deep nesting overflows the stack) in linear time.
MAX_YAML_BYTES = 16 * 2**20
MAX_YAML_DEPTH = 64
MAX_YAML_ALIASES = 100


def read_yaml(path: Path, error: type[LlmbError] = LlmbError) -> Any:
    """Read one YAML file within the limits above; every problem with the file is one line
    naming it (missing, unreadable, binary, not UTF-8, too large, too deep, too many aliases,
    malformed)."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise error(f"{path}: {size:,} bytes; a YAML file llmb reads holds at most {MAX_YAML_BYTES:,}")
        raw = path.read_bytes()
    except IsADirectoryError:
        raise error(f"{path} is a folder, not a YAML file") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in raw:
        kind = "UTF-16 text" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "binary data"
        raise error(f"{path.name}: holds {kind}, not a UTF-8 YAML text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path.name}: not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})") from None
    try:
        _check_shape(text, path.name, error)
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader, libyaml's when present
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise error(f"{path.name}:{where}: malformed YAML: {problem}") from None


def _check_shape(text: str, name: str, error: type[LlmbError]) -> None:
    """Depth and alias count from the parser's event stream (linear in the text's size)."""
    depth = aliases = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise error(f"{name}: nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise error(f"{name}: uses more than {MAX_YAML_ALIASES} YAML aliases (*name); write the values out")


def validate(model: type[M], data: Any, name: str, strict: bool = True, error: type[LlmbError] = LlmbError) -> M:
    """Validate ``data`` as ``model``. ``strict`` goes through JSON so that "8" is no integer
    and 8.0 no whole number, while YAML lists still fill tuple fields."""
    try:
        if strict:
            try:
                payload = json.dumps(data)
            except (TypeError, ValueError):
                raise error(f"{name}: holds a value YAML reads as a date or other non-JSON type; quote it") from None
            return model.model_validate_json(payload)
        return model.model_validate(data)
    except ValidationError as err:
        raise error(format_validation_error(name, err)) from None


def load_model(path: Path, model: type[M], strict: bool = True, error: type[LlmbError] = LlmbError) -> M:
    """Read ``path`` and validate it as ``model``; an empty file is an empty mapping."""
    data = read_yaml(path, error)
    return validate(model, {} if data is None else data, path.name, strict, error)


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (write aside, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
