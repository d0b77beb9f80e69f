#!/usr/bin/env python3
"""Check that the published schemas give the same verdict as an independent
validator on every fixture.

For every *.yaml / *.yml file below the fixtures root (hidden paths skipped)
this script computes a verdict twice and compares them file by file:

* independently, in Python: ruamel.yaml (pure, YAML 1.2 core schema) reads
  the file and jsonschema's Draft7Validator checks every non-empty document
  against schemas/manifest.json;
* with the project: `reconcile validate <set> --format json`, once per
  fixture set, reading the codes of the diagnostics it reports per file.

A verdict is one of `yaml-error`, `schema-invalid`, `schema-valid`. Semantic
diagnostics (cross-document rules) do not enter the verdict: the property
under test is "schema says valid <=> the project's schema layer says valid".

Besides the file-by-file comparison the script also fails when:
* schemas/manifest.json is not a valid draft-07 schema;
* manifest.json and the per-kind schema (service.json, ...) disagree on a
  document of that kind (editors use the per-kind schemas through the catalog);
* reconcile reports diagnostics for a file the walk here did not find, or
  counts a different number of documents in a set where neither side saw a
  YAML error (that would mean one side skipped a file or a document);
* no fixture file is found at all.

Some files cannot be compared honestly; they are skipped and listed in the
output (see `Uncomparable` below): files with non-string scalar mapping keys
and files beyond the product's documented resource bounds.

Setup: tests/external/setup.sh installs the pinned requirements.
Usage:
    python3 tests/external/independent_validator.py \
        --reconcile target/debug/reconcile [--fixtures tests/fixtures]
Exit status: 0 all agree, 1 a mismatch or a failed check, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# setup.sh installs the pinned requirements into tests/external/.venv; run
# under that interpreter when started with another one.
_VENV_PY = HERE / ".venv" / "bin" / "python"
if _VENV_PY.exists() and Path(sys.prefix).resolve() != (HERE / ".venv").resolve():
    os.execv(str(_VENV_PY), [str(_VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])

try:
    import jsonschema
    import referencing
    import referencing.jsonschema
    from jsonschema import Draft7Validator
    from jsonschema.exceptions import ValidationError, best_match
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import ConstructorError, SafeConstructor
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.events import MappingEndEvent, MappingStartEvent, SequenceEndEvent, SequenceStartEvent
    from ruamel.yaml.nodes import ScalarNode
    from ruamel.yaml.resolver import VersionedResolver
    from ruamel.yaml.tag import Tag
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(
        f"independent validator: missing Python dependency ({e}); "
        f"run tests/external/setup.sh first"
    )

# Bounds the product documents for one manifest file (src/source.rs,
# src/yaml.rs). Valid YAML beyond them is refused by reconcile before any
# schema check, so such files are not compared (see Uncomparable).
MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 1_000_000

RECONCILE_TIMEOUT_S = 300

# --------------------------------------------------------------------------
# YAML 1.2 core schema on top of ruamel.yaml
#
# ruamel.yaml's "1.2" resolver is not the 1.2 core schema: it still resolves
# timestamps (2024-01-01 becomes a date), merge keys (<<), the `=` value key
# (a plain `=` fails to load), underscores in numbers (1_000) and 0b binary
# ints. The manifest format is YAML 1.2, whose core schema (YAML 1.2.2,
# section 10.3.2) has none of these, so plain scalars are resolved here with
# the spec's own regular expressions, and the scalar types are constructed
# by the spec's rules rather than ruamel's version-dependent ones.
# --------------------------------------------------------------------------

T_NULL = "tag:yaml.org,2002:null"
T_BOOL = "tag:yaml.org,2002:bool"
T_INT = "tag:yaml.org,2002:int"
T_FLOAT = "tag:yaml.org,2002:float"

CORE_NULL = re.compile(r"null|Null|NULL|~|")
CORE_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
CORE_INT10 = re.compile(r"[-+]?[0-9]+")
CORE_INT8 = re.compile(r"0o[0-7]+")
CORE_INT16 = re.compile(r"0x[0-9a-fA-F]+")
CORE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
CORE_INF = re.compile(r"[-+]?(\.inf|\.Inf|\.INF)")
CORE_NAN = re.compile(r"\.nan|\.NaN|\.NAN")

# Resolution order of the spec's table: null, bool, int, float, else str.
CORE_RESOLVERS = [
    (T_NULL, (CORE_NULL,)),
    (T_BOOL, (CORE_BOOL,)),
    (T_INT, (CORE_INT10, CORE_INT8, CORE_INT16)),
    (T_FLOAT, (CORE_FLOAT, CORE_INF, CORE_NAN)),
]


class CoreResolver(VersionedResolver):
    """Plain scalars resolved with the YAML 1.2 core schema, whatever a
    %YAML directive says; everything else as ruamel does it."""

    def resolve(self, kind, value, implicit):
        if kind is ScalarNode and implicit[0]:
            for tag, patterns in CORE_RESOLVERS:
                if any(p.fullmatch(value) for p in patterns):
                    return Tag(suffix=tag)
            return self.DEFAULT_SCALAR_TAG
        return super().resolve(kind, value, implicit)


def _scalar_text(constructor, node):
    if not isinstance(node, ScalarNode):
        raise ConstructorError(
            None, None, f"expected a scalar for {node.tag}, found a collection", node.start_mark
        )
    return node.value


def _bad(node, what):
    return ConstructorError(None, None, f"`{node.value}` is not a valid {what}", node.start_mark)


class CoreConstructor(SafeConstructor):
    """Scalars by the 1.2 core schema; YAML types that JSON cannot hold
    (binary, timestamp, set, omap, pairs) are load errors."""

    def construct_core_null(self, node):
        if not CORE_NULL.fullmatch(_scalar_text(self, node)):
            raise _bad(node, "null")
        return None

    def construct_core_bool(self, node):
        text = _scalar_text(self, node)
        if not CORE_BOOL.fullmatch(text):
            raise _bad(node, "boolean")
        return text.lower() == "true"

    def construct_core_int(self, node):
        text = _scalar_text(self, node)
        if CORE_INT10.fullmatch(text):
            return int(text, 10)
        if CORE_INT8.fullmatch(text):
            return int(text[2:], 8)
        if CORE_INT16.fullmatch(text):
            return int(text[2:], 16)
        raise _bad(node, "integer")

    def construct_core_float(self, node):
        text = _scalar_text(self, node)
        if CORE_NAN.fullmatch(text):
            return math.nan
        if CORE_INF.fullmatch(text):
            return -math.inf if text.startswith("-") else math.inf
        if CORE_FLOAT.fullmatch(text) or CORE_INT10.fullmatch(text):
            return float(text)
        raise _bad(node, "float")

    def construct_not_json(self, node):
        raise ConstructorError(
            None,
            None,
            f"values tagged {node.tag} have no JSON equivalent",
            node.start_mark,
        )


CoreConstructor.add_constructor(T_NULL, CoreConstructor.construct_core_null)
CoreConstructor.add_constructor(T_BOOL, CoreConstructor.construct_core_bool)
CoreConstructor.add_constructor(T_INT, CoreConstructor.construct_core_int)
CoreConstructor.add_constructor(T_FLOAT, CoreConstructor.construct_core_float)
for _t in ("binary", "timestamp", "set", "omap", "pairs", "merge", "value"):
    CoreConstructor.add_constructor("tag:yaml.org,2002:" + _t, CoreConstructor.construct_not_json)


def make_yaml():
    y = YAML(typ="safe", pure=True)
    y.version = (1, 2)
    y.Resolver = CoreResolver
    y.Constructor = CoreConstructor
    return y


# --------------------------------------------------------------------------
# From loaded YAML to the JSON data model
# --------------------------------------------------------------------------


class NotJson(Exception):
    """The document holds a value JSON cannot hold: it is rejected before
    any schema check (a yaml-error verdict)."""


class Uncomparable(Exception):
    """The file is valid YAML but the two sides cannot be compared on it:

    * a mapping key that is a non-string scalar (`1:`, `true:`, `~:`,
      `1.5:`). JSON keys are strings and there is no standard spelling of
      such a key as one (the source text `0x1F`, or `31`? `~`, `null` or
      the empty string?), so any verdict here would only copy one side's
      convention;
    * a file beyond the bounds the product documents for a manifest file
      (size, nesting depth, values after alias expansion). reconcile refuses
      those as a safeguard before the schema layer; valid YAML that large
      is a policy question, not a schema one. Python's own recursion limit
      on very deep nesting falls in this class too.
    """


def to_json(value, where="", depth=0, budget=None):
    """Check that `value` is in the JSON data model and within the bounds.
    Returns the number of values it holds, aliases expanded."""
    if budget is None:
        budget = [0]
    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise Uncomparable(f"more than {MAX_NODES} values with aliases expanded")
    if isinstance(value, dict):
        depth += 1
        if depth > MAX_DEPTH:
            raise Uncomparable(f"nesting deeper than {MAX_DEPTH} levels at {short(where)}")
        for k, v in value.items():
            if isinstance(k, tuple):
                raise NotJson(f"mapping key at {where or '/'} is a sequence; JSON keys are strings")
            if not isinstance(k, str):
                raise Uncomparable(
                    f"non-string mapping key {k!r} at {where or '/'} (no standard JSON spelling)"
                )
            to_json(v, f"{where}/{escape_pointer(k)}", depth, budget)
    elif isinstance(value, list):
        depth += 1
        if depth > MAX_DEPTH:
            raise Uncomparable(f"nesting deeper than {MAX_DEPTH} levels at {short(where)}")
        for i, v in enumerate(value):
            to_json(v, f"{where}/{i}", depth, budget)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise NotJson(f"{value!r} at {where or '/'} is not a number JSON can hold")
    elif value is None or isinstance(value, (str, bool, int)):
        pass
    else:
        raise NotJson(f"{type(value).__name__} value at {where or '/'} has no JSON equivalent")
    return budget[0]


def short(pointer: str) -> str:
    return pointer if len(pointer) <= 60 else pointer[:57] + "..."


def escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def pointer_of(path) -> str:
    return "".join("/" + escape_pointer(str(p)) for p in path)


# --------------------------------------------------------------------------
# Schemas
# --------------------------------------------------------------------------


def ecma_pattern(pattern: str) -> str:
    """JSON Schema patterns are ECMA-262 regular expressions. Python's `$`
    also matches before a final newline (`re.search('^a$', 'a\\n')` is a
    match), which ECMA-262's does not; rewrite unescaped `$` outside
    character classes to `\\Z`. Other dialect differences (`\\d`, `\\w`
    being Unicode-aware in Python) do not matter for the patterns the
    schemas use, which spell their classes out."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
        elif c == "$":
            c = r"\Z"
        out.append(c)
        i += 1
    return "".join(out)


_pattern_cache: dict[str, re.Pattern] = {}


def ecma_pattern_keyword(validator, patrn, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    rx = _pattern_cache.get(patrn)
    if rx is None:
        rx = _pattern_cache[patrn] = re.compile(ecma_pattern(patrn))
    if not rx.search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def ecma_pattern_properties(validator, pattern_properties, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for patrn, subschema in pattern_properties.items():
        rx = _pattern_cache.get(patrn)
        if rx is None:
            rx = _pattern_cache[patrn] = re.compile(ecma_pattern(patrn))
        for k, v in instance.items():
            if rx.search(k):
                yield from validator.descend(v, subschema, path=k, schema_path=patrn)


Validator = jsonschema.validators.extend(
    Draft7Validator,
    {"pattern": ecma_pattern_keyword, "patternProperties": ecma_pattern_properties},
)


@dataclass
class Schemas:
    manifest: object  # validator for manifest.json
    by_kind: dict  # kind -> (file name, validator)


def load_schemas(schema_dir: Path) -> Schemas:
    registry = referencing.Registry()
    docs = {}
    for p in sorted(schema_dir.glob("*.json")):
        doc = json.loads(p.read_text(encoding="utf-8"))
        if doc.get("$schema", "").startswith("https://json.schemastore.org/"):
            continue  # catalog.json: not a schema
        # Give every schema its file URI as id, so that a relative $ref
        # between the published files resolves to the file next to it and
        # never to the network.
        doc = dict(doc)
        doc.setdefault("$id", p.as_uri())
        docs[p.name] = doc
        registry = registry.with_resource(
            doc["$id"], referencing.Resource.from_contents(
                doc, default_specification=referencing.jsonschema.DRAFT7
            )
        )
    if "manifest.json" not in docs:
        fail(f"no manifest.json in {schema_dir}")
    validators = {}
    for name, doc in docs.items():
        try:
            Draft7Validator.check_schema(doc)
        except jsonschema.SchemaError as e:
            fail(f"{schema_dir / name} is not a valid draft-07 schema: {e.message} at {pointer_of(e.absolute_path)}")
        validators[name] = Validator(
            doc, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER
        )
    by_kind = {}
    for name, doc in docs.items():
        kind = doc.get("properties", {}).get("kind", {}).get("const")
        if name != "manifest.json" and isinstance(kind, str):
            by_kind[kind] = (name, validators[name])
    return Schemas(validators["manifest.json"], by_kind)


# --------------------------------------------------------------------------
# The independent verdict
# --------------------------------------------------------------------------


@dataclass
class PyResult:
    verdict: str | None  # None: not comparable
    detail: str = ""  # first error, or why not comparable
    documents: int = 0  # non-empty documents
    problems: list = field(default_factory=list)  # schema files disagreeing


def first_error(errors):
    e = best_match(errors)
    return f"{pointer_of(e.absolute_path) or '/'}: {e.message}"


def yaml_error_text(e) -> str:
    """One line for a ruamel error: where, and what."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is not None and problem:
        context = getattr(e, "context", None)
        text = f"line {mark.line + 1}, column {mark.column + 1}: " + (f"{context}: " if context else "") + problem
    else:
        text = str(e)
    return " ".join(text.split())[:300]


def python_verdict(path: Path, schemas: Schemas, yaml) -> PyResult:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return PyResult(None, f"file larger than {MAX_FILE_BYTES // 1048576} MiB")
        data = path.read_bytes()
    except OSError as e:
        return PyResult("yaml-error", f"unreadable: {e.strerror or e}")
    # The manifest format is UTF-8 (YAML would also allow UTF-16/32 with a
    # byte-order mark; neither side accepts them, and JSON text is UTF-8).
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return PyResult("yaml-error", f"not UTF-8: byte 0x{data[e.start]:02X} at offset {e.start}")
    try:
        # Measure nesting on the event stream first: ruamel's composer is
        # recursive and takes seconds to hit Python's recursion limit.
        depth = 0
        for event in yaml.parse(text):
            if isinstance(event, (SequenceStartEvent, MappingStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    return PyResult(None, f"nesting deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                depth -= 1
        docs = list(yaml.load_all(text))
    except YAMLError as e:
        return PyResult("yaml-error", yaml_error_text(e))
    except RecursionError:
        return PyResult(None, "nesting too deep for Python's recursion limit")
    try:
        budget = [0]
        for i, d in enumerate(docs):
            to_json(d, "", 0, budget)
    except NotJson as e:
        return PyResult("yaml-error", f"document {i + 1}: {e}")
    except Uncomparable as e:
        return PyResult(None, f"document {i + 1}: {e}")

    result = PyResult("schema-valid")
    for i, d in enumerate(docs):
        if d is None:
            continue  # an empty document (or one that is only `~`/`null`)
        result.documents += 1
        errors = list(schemas.manifest.iter_errors(d))
        if errors and result.verdict == "schema-valid":
            result.verdict = "schema-invalid"
            result.detail = f"document {i + 1} {first_error(errors)}"
        kind = d.get("kind") if isinstance(d, dict) else None
        if isinstance(kind, str) and kind in schemas.by_kind:
            name, v = schemas.by_kind[kind]
            kind_errors = list(v.iter_errors(d))
            if bool(kind_errors) != bool(errors):
                result.problems.append(
                    f"document {i + 1}: manifest.json says "
                    f"{first_error(errors) if errors else 'valid'}, but {name} says "
                    f"{first_error(kind_errors) if kind_errors else 'valid'}"
                )
    return result


# --------------------------------------------------------------------------
# Fixture discovery
# --------------------------------------------------------------------------


def is_manifest(name: str) -> bool:
    return name.endswith(".yaml") or name.endswith(".yml")


def walk_manifests(root: Path):
    """Every *.yaml/*.yml file below root (or root itself), hidden paths
    skipped, symlinked folders not followed (as reconcile reads a source)."""
    if root.is_file():
        return [root] if is_manifest(root.name) else []
    found = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for f in sorted(files):
            p = Path(d) / f
            if not f.startswith(".") and is_manifest(f) and not p.is_dir():
                found.append(p)
    return found


def find_sets(root: Path):
    """Fixture sets: each child folder of root/valid and root/invalid, and
    each other child folder of root (a root that directly holds sets). A
    manifest file lying directly in root, root/valid or root/invalid is a
    set of its own."""
    sets = []
    for child in sorted(root.iterdir()):
        if child.name.startswith("."):
            continue
        if child.is_dir() and not child.is_symlink():
            if child.name in ("valid", "invalid"):
                for s in sorted(child.iterdir()):
                    if s.name.startswith("."):
                        continue
                    if s.is_dir() and not s.is_symlink():
                        sets.append(s)
                    elif is_manifest(s.name) and not s.is_dir():
                        sets.append(s)
            else:
                sets.append(child)
        elif is_manifest(child.name) and not child.is_dir():
            sets.append(child)
    return sets


# --------------------------------------------------------------------------
# The project's verdict
# --------------------------------------------------------------------------

YAML_STAGE_CODES = {"yaml", "encoding", "file"}


@dataclass
class OurSet:
    documents: int
    diagnostics: dict  # relative file -> [diagnostic]


def run_reconcile(reconcile: list, set_path: Path) -> OurSet:
    cmd = reconcile + ["validate", str(set_path), "--format", "json"]
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=RECONCILE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        fail(f"`{' '.join(cmd)}` did not finish in {RECONCILE_TIMEOUT_S} s")
    except OSError as e:
        fail(f"cannot run `{' '.join(cmd)}`: {e}")
    stderr = p.stderr.decode("utf-8", "replace").strip()
    if p.returncode not in (0, 1):
        fail(f"`{' '.join(cmd)}` exited with {p.returncode} (0 or 1 expected)\n{stderr}")
    try:
        out = json.loads(p.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(
            f"`{' '.join(cmd)}` printed no single JSON object on stdout ({e})\n"
            f"stdout starts: {p.stdout[:300]!r}\nstderr: {stderr[:1000]}"
        )
    if (
        not isinstance(out, dict)
        or not isinstance(out.get("valid"), bool)
        or not isinstance(out.get("documents"), int)
        or not isinstance(out.get("diagnostics"), list)
    ):
        fail(f"`{' '.join(cmd)}`: unexpected JSON shape: {json.dumps(out)[:500]}")
    if out["valid"] != (p.returncode == 0):
        fail(f"`{' '.join(cmd)}` exited with {p.returncode} but said valid={out['valid']}")
    by_file: dict = {}
    for d in out["diagnostics"]:
        if not isinstance(d, dict) or not isinstance(d.get("file"), str):
            fail(f"`{' '.join(cmd)}`: diagnostic without a file: {json.dumps(d)[:300]}")
        by_file.setdefault(d["file"], []).append(d)
    return OurSet(out["documents"], by_file)


def our_verdict(diags) -> str:
    errors = [d for d in diags if d.get("severity", "error") == "error"]
    if any(d.get("code") in YAML_STAGE_CODES for d in errors):
        return "yaml-error"
    if any(d.get("code") == "schema" for d in errors):
        return "schema-invalid"
    return "schema-valid"


def show_diag(d) -> str:
    where = f"{d.get('line', '?')}:{d.get('column', '?')}"
    return f"[{d.get('code')}] {where} {d.get('pointer') or '/'}: {d.get('message')}"


# --------------------------------------------------------------------------


def fail(message: str):
    print(f"independent validator: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Compare the published schemas' verdicts (Python jsonschema) with reconcile's on every fixture."
    )
    ap.add_argument("--reconcile", required=True, help="path to the built reconcile executable")
    ap.add_argument("--fixtures", default=str(REPO / "tests" / "fixtures"), help="fixtures root (default: %(default)s)")
    ap.add_argument("--schemas", default=str(REPO / "schemas"), help="schema folder (default: %(default)s)")
    args = ap.parse_args(argv)

    reconcile = Path(args.reconcile)
    if not reconcile.is_file() or not os.access(reconcile, os.X_OK):
        print(f"independent validator: --reconcile {reconcile} is not an executable file", file=sys.stderr)
        return 2
    root = Path(args.fixtures)
    if not root.is_dir():
        print(f"independent validator: fixtures root {root} is not a directory", file=sys.stderr)
        return 2

    schemas = load_schemas(Path(args.schemas).resolve())
    yaml = make_yaml()

    sets = find_sets(root)
    in_sets = {p.resolve() for s in sets for p in walk_manifests(s)}
    stray = [p for p in walk_manifests(root) if p.resolve() not in in_sets]
    if stray:
        fail("manifest files outside every fixture set: " + ", ".join(str(p) for p in stray))

    counts = {"schema-valid": 0, "schema-invalid": 0, "yaml-error": 0}
    mismatches, problems, skipped = [], [], []
    total = 0
    for s in sets:
        files = walk_manifests(s)
        if not files:
            continue
        ours = run_reconcile([str(reconcile.resolve())], s)
        base = s if s.is_dir() else s.parent
        names = {p.relative_to(base).as_posix(): p for p in files}
        unknown = sorted(set(ours.diagnostics) - set(names))
        if unknown:
            problems.append(f"{s}: reconcile reported files this walk did not find: {', '.join(unknown)}")
        any_yaml_error, py_docs = False, 0
        for name, path in names.items():
            total += 1
            shown = path.relative_to(root).as_posix()
            py = python_verdict(path, schemas, yaml)
            diags = ours.diagnostics.get(name, [])
            mine = our_verdict(diags)
            py_docs += py.documents
            any_yaml_error |= py.verdict in (None, "yaml-error") or mine == "yaml-error"
            for pr in py.problems:
                problems.append(f"{shown}: published schemas disagree: {pr}")
            if py.verdict is None:
                skipped.append(f"{shown}: {py.detail} (reconcile: {mine})")
                continue
            if py.verdict != mine:
                lines = [
                    f"MISMATCH {shown}",
                    f"  python:    {py.verdict}" + (f" - {py.detail}" if py.detail else ""),
                    f"  reconcile: {mine}",
                ]
                relevant = [d for d in diags if d.get("code") in YAML_STAGE_CODES | {"schema"}]
                lines += [f"    {show_diag(d)}" for d in relevant] or ["    (no yaml or schema diagnostics)"]
                mismatches.append("\n".join(lines))
            else:
                counts[py.verdict] += 1
        if not any_yaml_error and py_docs != ours.documents:
            problems.append(
                f"{s}: reconcile counted {ours.documents} documents, the YAML here has {py_docs} non-empty ones"
            )

    if total == 0:
        fail(f"no *.yaml / *.yml fixture found under {root}")
    if skipped:
        print(f"independent validator: {len(skipped)} file(s) not compared (see Uncomparable in {Path(__file__).name}):")
        for s in skipped:
            print(f"  - {s}")
    if mismatches or problems:
        for m in mismatches:
            print(m)
        for pr in problems:
            print(f"PROBLEM {pr}")
        print(
            f"independent validator: FAILED: {len(mismatches)} of {total - len(skipped)} compared files "
            f"disagree, {len(problems)} other problem(s)",
            file=sys.stderr,
        )
        return 1
    agreed = sum(counts.values())
    if agreed == 0:
        fail(f"none of the {total} fixture files could be compared")
    print(
        f"independent validator: {agreed} files agree ({counts['schema-valid']} schema-valid, "
        f"{counts['schema-invalid']} schema-invalid, {counts['yaml-error']} yaml-error)"
        + (f", {len(skipped)} not compared" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
