"""Load ``config.yaml``, fill defaults from the JSON schema, and turn schema errors into one line.

The schema (``pilip/schemas/config.schema.yaml``, JSON Schema 2020-12, shipped as package data)
holds every section's keys and defaults but the training settings, which are declared once in
``pilip.potential.train_config.TrainConfig`` (and the recipes) and filled in by
:func:`load_schema`; the Snakefile validates through the same function. Errors name the file and
the key path the way a user would write it, e.g.
``config.yaml: sampling.generators[0].amplitude: expected number, got 'abc'``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pilip.errors import PilipError

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

# Names of systems and references end up in file names: letters, digits, _ and -.
SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
SAFE_NAME_HINT = "use letters, digits, _ and -, starting with a letter"

_TYPE_NAMES = {"object": "mapping", "array": "list", "boolean": "true/false"}


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a safe identifier, else raise a one-line PilipError."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise PilipError(f"{what}: {name!r} is not a safe name ({SAFE_NAME_HINT})")
    return name


def load_schema(path: str | os.PathLike | None = None) -> dict:
    """The config JSON schema as a dict, its ``training`` settings filled in from their
    declarations."""
    import yaml

    path = Path(path) if path is not None else SCHEMA_PATH
    if not path.is_file():
        raise PilipError(
            f"{path}: config schema not found; reinstall pilip (the schema is package data)"
        )
    with open(path, encoding="utf-8") as handle:
        schema = yaml.safe_load(handle)
    if "training" in schema.get("properties", {}):
        from pilip.potential.train_config import complete_schema

        complete_schema(schema)
    return schema


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file, with one-line errors for a missing, binary or malformed file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PilipError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PilipError(f"{path}: not a text file (is it binary?); give a YAML config") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PilipError(f"{path}: invalid YAML at {where}{problem}") from None


def load_config(
    path: str | os.PathLike, schema: Mapping | str | os.PathLike | None = None
) -> dict[str, Any]:
    """Read, default-fill and validate a config file; returns the complete config dict.

    Every key the schema gives a default is present in the result. Unknown keys, wrong types
    and out-of-range values raise PilipError naming the file and the key path.
    """
    config = read_yaml(path)
    if config is None:
        config = {}
    return validate_config(config, schema, source=str(path))


def validate_config(
    config: Any, schema: Mapping | str | os.PathLike | None = None, source: str = "config"
) -> dict[str, Any]:
    """Fill defaults into a copy of ``config`` and validate it against the schema."""
    if not isinstance(config, Mapping):
        raise PilipError(f"{source}: expected a mapping of keys at the top level")
    if schema is None or isinstance(schema, (str, os.PathLike)):
        schema = load_schema(schema)
    given = config
    config = copy.deepcopy(dict(config))
    validator_class = _defaulting_validator()
    validator = validator_class(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        import jsonschema.exceptions

        # An invalid value inside an if/then branch also makes its key "unevaluated": report
        # the value, not a spurious unknown key.
        specific = [e for e in errors if e.validator != "unevaluatedProperties"] or errors
        error = jsonschema.exceptions.best_match(specific)
        raise PilipError(f"{source}: {describe_error(error)}")
    from pilip.potential.study_models import check_study_models
    from pilip.reference.backends import check_reference_names

    try:  # every reference entry parsed, every reference name known, before any job
        check_reference_names(config, given)
        if "training" in schema.get("properties", {}):
            check_study_models(config)  # each run's hyper-parameters fit its model
        check_students(config)
    except PilipError as exc:
        raise PilipError(f"{source}: {exc}") from None
    return config


def check_students(config: Mapping[str, Any]) -> None:
    """Every distilled student variant (``teacher:``) names another variant that is a Delta
    model (``baseline:``) and sets no recipe of its own; the student's keys appear only in a
    student. One-line PilipError naming the key otherwise."""
    variants = (config.get("training") or {}).get("variants") or {}
    for name, variant in variants.items():
        key = f"training.variants.{name}"
        teacher = variant.get("teacher")
        if teacher is None:
            if variant.get("reference_weight") is not None:
                raise PilipError(
                    f"{key}.reference_weight: only a distilled student has one; add "
                    "teacher: VARIANT (a Delta variant) or drop it"
                )
            continue
        if teacher not in variants or teacher == name:
            others = [v for v in variants if v != name and variants[v].get("baseline")]
            raise PilipError(
                f"{key}.teacher: {teacher!r} is not another variant in training.variants; "
                f"name a Delta variant (one with baseline:; here: {', '.join(others) or 'none'})"
            )
        if not variants[teacher].get("baseline"):
            what = "a student itself" if variants[teacher].get("teacher") else "no Delta model"
            raise PilipError(
                f"{key}.teacher: {teacher!r} is {what} (training.variants.{teacher} has no "
                "baseline:); the teacher must be a Delta variant"
            )
        own = sorted(k for k in ("baseline", "init") if variant.get(k) is not None)
        if own:
            raise PilipError(
                f"{key}: a distilled student (teacher: {teacher}) takes no {', '.join(own)}; "
                "it is a plain model trained on its teacher's labels: drop them"
            )


def config_hash(config: Mapping[str, Any]) -> str:
    """16 hex characters of a sha256 over the canonical JSON of a (default-filled) config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- the workflow's view of a config ---------------------------------------------------------


def settings_json(config: Mapping[str, Any], *paths: str, exclude: tuple[str, ...] = ()) -> str:
    """Canonical JSON of the config values at ``paths`` (dotted keys), minus ``exclude`` keys.

    The rules pass it as a param, so Snakemake reruns a job exactly when a setting it reads
    changes, and not after an edit that changes no setting (a comment, or a placement key such
    as ``threads`` that is left out). ``*`` selects every entry of a mapping:
    ``settings_json(c, "splits", "systems.*.split")``. One path gives its value alone; several
    give a mapping from path to value.
    """

    def select(value: Any, parts: list[str]) -> Any:
        if not parts:
            if isinstance(value, Mapping):
                return {k: v for k, v in value.items() if k not in exclude}
            return value
        if not isinstance(value, Mapping):
            return None
        if parts[0] == "*":
            return {k: select(v, parts[1:]) for k, v in value.items()}
        return select(value.get(parts[0]), parts[1:])

    selected = {path: select(config, path.split(".")) for path in paths}
    value = selected[paths[0]] if len(paths) == 1 else selected
    return json.dumps(value, sort_keys=True, default=str)


def typed_overrides(value: Any) -> Any:
    """Snakemake's ``--config KEY={...}`` reads nested values as strings (``"8"``, ``"true"``,
    ``"null"``); read each string leaf as a YAML scalar, as the config file would be read."""
    import yaml

    if isinstance(value, Mapping):
        return {key: typed_overrides(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed_overrides(item) for item in value]
    if isinstance(value, str):
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        return parsed if parsed is None or isinstance(parsed, (bool, int, float)) else value
    return value


def check_labelling_reference(config: Mapping[str, Any]) -> None:
    """The reference the workflow labels with exists, also when it is the schema's default.

    The config check (pilip.reference.backends.check_reference_names) checks the names a user
    wrote; a
    workflow with systems also labels with a default ``labelling.reference`` it never wrote.
    """
    from pilip.reference.backends import INLINE_REFERENCES

    name = config["labelling"]["reference"]
    references = config.get("references") or {}
    if name in references or str(name).lower() in INLINE_REFERENCES:
        return
    known = ", ".join(references) or "none"
    raise PilipError(
        f"labelling.reference: {name!r} (the default) is not a name in `references` (known: "
        f"{known}); set labelling.reference to the reference the models are trained on"
    )


def runs_in_process(config: Mapping[str, Any], name: str) -> bool:
    """Whether the reference (or inline method) ``name`` runs in this process (tblite), so a
    model can call it at every MD step, rather than only through labels tables (Psi4)."""
    from pilip.reference.backends import get_backend
    from pilip.reference.labelling import resolve_reference

    reference = resolve_reference(name, dict(config), "config")
    return bool(get_backend(str(reference.spec["backend"])).in_process)


def tabled_variants(config: Mapping[str, Any]) -> list[str]:
    """The training variants whose Delta baseline runs only from labels tables (a Psi4 level):
    the workflow trains and evaluates them with the cheap level's labels, and they cannot run
    MD. One-line PilipError for such a baseline that is not the enabled cheap level (the only
    level the workflow labels the structures with, with forces) or with the weak losses."""
    from pilip.potential.terms import WEAK_TERMS

    training = config.get("training") or {}
    cheap = config.get("cheap_level") or {}
    tabled = []
    for name, variant in (training.get("variants") or {}).items():
        baseline = variant.get("baseline")
        if not baseline or runs_in_process(config, baseline):
            continue
        key = f"training.variants.{name}.baseline"
        if not (cheap.get("enabled") and cheap.get("reference") == baseline):
            raise PilipError(
                f"{key}: {baseline!r} runs only from labels tables (Psi4), and the workflow "
                f"labels the structures with forces at the cheap level only; set "
                f"cheap_level.reference: {baseline} (enabled), or use a baseline that runs in "
                "process (xtb)"
            )
        losses = variant.get("losses", training.get("losses") or [])
        weak = [term for term in losses if term in WEAK_TERMS]
        if weak:
            raise PilipError(
                f"training.variants.{name}.losses: {', '.join(weak)} need the baseline at "
                f"perturbed geometries, but {baseline!r} runs only from labels tables; drop them"
            )
        tabled.append(name)
    return tabled


def seed_file(spec: Mapping[str, Any], config_dir: str | os.PathLike) -> Path | None:
    """The structure file a ``systems.<name>`` entry names (relative to ``config_dir``), or None
    when its seed is an ASE molecule name."""
    path = Path(config_dir) / str(spec.get("seed", ""))
    return path.resolve() if path.is_file() else None


def resolved_config(config: Mapping[str, Any], config_dir: str | os.PathLike) -> dict[str, Any]:
    """A copy of a config (as written) that reads the same from any folder: seed files absolute."""
    resolved = copy.deepcopy(dict(config))
    for spec in (resolved.get("systems") or {}).values():
        path = seed_file(spec, config_dir)
        if path is not None:
            spec["seed"] = str(path)
    return resolved


def write_config(config: Mapping[str, Any], path: str | os.PathLike, header: str = "") -> bool:
    """Write ``config`` as YAML (atomically); leave the file untouched when it already holds
    exactly this text. Returns whether it was written."""
    import yaml

    from pilip.atomic_io import atomic_path

    text = header + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)
    path = Path(path)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return True


# --- errors ----------------------------------------------------------------------------------


def key_path(parts: Iterator[Any] | list[Any]) -> str:
    """``["sampling", "generators", 0, "n"]`` -> ``sampling.generators[0].n``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list):
        return "array"
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    if isinstance(value, (Mapping, list)):
        return f"a {_TYPE_NAMES[_json_type(value)]}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_error(error: Any) -> str:
    """One line for a jsonschema ValidationError: ``key.path: what is wrong``."""
    path = list(error.absolute_path)
    value, schema, kind = error.instance, error.schema, error.validator
    if kind in ("additionalProperties", "unevaluatedProperties") and isinstance(value, Mapping):
        allowed = _allowed_keys(schema, value)
        unknown = sorted(k for k in value if k not in allowed)
        name = unknown[0] if unknown else "?"
        hint = f" (allowed: {', '.join(sorted(allowed))})" if allowed else ""
        return f"{key_path([*path, name])}: unknown key{hint}"
    where = key_path(path) or "top level"
    if "propertyNames" in error.absolute_schema_path and kind == "enum":  # a closed key set
        options = ", ".join(str(o) for o in error.validator_value)
        return f"{where}: {_shown(value)} is an unknown key (allowed: {options})"
    if "propertyNames" in error.absolute_schema_path or (
        kind == "pattern" and error.validator_value == SAFE_NAME.pattern
    ):
        return f"{where}: {_shown(value)} is not a safe name ({SAFE_NAME_HINT})"
    if kind == "type":
        wanted = error.validator_value
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        names = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted)
        return f"{where}: expected {names}, got {_shown(value)}"
    if kind == "required":
        missing = re.findall(r"'([^']*)' is a required property", error.message)
        name = missing[0] if missing else error.message
        return f"{key_path([*path, name])}: missing (required)"
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return f"{where}: expected one of {options}, got {_shown(value)}"
    if kind == "const":
        return f"{where}: expected {error.validator_value!r}, got {_shown(value)}"
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"{where}: must be {sign[kind]} {error.validator_value}, got {_shown(value)}"
    if kind in ("minItems", "maxItems", "minProperties", "maxProperties"):
        return f"{where}: {error.message}"
    if kind == "pattern":
        return f"{where}: {_shown(value)} does not match {error.validator_value}"
    return f"{where}: {error.message.splitlines()[0]}"


def _allowed_keys(schema: Mapping, instance: Mapping) -> set[str]:
    """Keys an object schema allows, including those of ``if``/``then`` branches that apply."""
    allowed = set(schema.get("properties", {}))
    for branch in schema.get("allOf", []):
        condition = branch.get("if")
        if condition is None or _matches(condition, instance):
            allowed |= set(branch.get("then", branch).get("properties", {}))
    return allowed


def _matches(schema: Mapping, instance: Any) -> bool:
    import jsonschema

    return jsonschema.Draft202012Validator(schema).is_valid(instance)


# --- default filling -------------------------------------------------------------------------


def _defaulting_validator() -> type:
    """A Draft 2020-12 validator that inserts ``default`` values of absent properties.

    Defaults are set as the validator walks the schema, so defaults inside ``then`` branches
    apply only when their ``if`` matches and nested defaults fill freshly inserted objects.
    """
    import jsonschema

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def properties(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if isinstance(subschema, Mapping) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": properties})
