"""The code habits CI holds the tree to, checked by the test suite so they hold between reviews.

- ``ruff check`` and ``ruff format --check`` (rules and the 100 columns in pyproject.toml);
- ``mypy`` (strict on the engine, the journal and the two boundaries; the rest checked without
  requiring annotations everywhere), and the unit tests' fakes checked against the
  :class:`~processor.marketplace.protocol.Marketplace` protocol they stand in for;
- ``lint-imports``: the layer contracts in pyproject.toml;
- no module of ``processor`` or ``cancel_sandbox`` over 1,200 lines: a sanity cap, not the rule.
  The rule is a judgment (docs/design.md, "Modules by subject"): one module per concept, even at
  800 lines, over four slices of one concept;
- no test reads a private attribute (``x._name``) of anything but itself: tests use constructors,
  fakes and public methods, so a refactoring of the processor's insides breaks no test;
- no class in ``processor`` inheriting from a class defined in another ``processor`` module, except
  protocols, exceptions, enums and typing's bases: behaviour shared across modules is composed, not
  inherited, so a reader finds a class's behaviour in its own module.

Each tool runs with this interpreter, from the repository root; a failure names the files to fix.
"""

from __future__ import annotations

import ast
import builtins
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 1200  # a god module guard only; a concept is not sliced to fit under it
SIZE_CHECKED = ("processor", "cancel_sandbox")
TOOL_TIMEOUT = 900  # seconds: a cold mypy run over the tree on a busy machine

# Bases a processor class may take from another processor module: what they share is a contract
# (a protocol, an error's place in a hierarchy, an enumeration), not behaviour.
_EXEMPT_ROOTS = {
    "typing.Protocol",
    "typing.Generic",
    "typing.NamedTuple",
    "typing.TypedDict",
    "typing_extensions.Protocol",
    "typing_extensions.TypedDict",
    "enum.Enum",
    "enum.IntEnum",
    "enum.StrEnum",
    "enum.Flag",
    "enum.IntFlag",
}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )


def _files(pattern: str, output: str) -> list[str]:
    """The distinct file names a tool's output names, first group of ``pattern`` on each line."""
    return sorted({m.group(1) for m in re.finditer(pattern, output, flags=re.MULTILINE)})


def _failure(tool: str, files: list[str], output: str) -> str:
    listed = "\n".join(f"  {name}" for name in files) or "  (no file named; see the output)"
    return f"{tool} failed in {len(files)} file(s):\n{listed}\n\n{output[-6000:]}"


def test_ruff_check_finds_nothing() -> None:
    done = _run("-m", "ruff", "check", "--output-format", "concise", "--no-cache", ".")
    files = _files(r"^(\S+?):\d+:\d+: ", done.stdout)
    assert done.returncode == 0, _failure("ruff check", files, done.stdout + done.stderr)


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    done = _run("-m", "ruff", "format", "--check", "--no-cache", ".")
    files = _files(r"^Would reformat: (\S+)", done.stdout)
    assert done.returncode == 0, _failure("ruff format --check", files, done.stdout + done.stderr)


def test_mypy_finds_nothing() -> None:
    done = _run("-m", "mypy")
    files = _files(r"^(\S+?\.py):\d+: error:", done.stdout)
    assert done.returncode == 0, _failure("mypy", files, done.stdout + done.stderr)


def test_the_real_gateway_and_the_test_fakes_are_marketplaces(tmp_path: Path) -> None:
    """mypy checks the real gateway and every fake Connect against the protocol the engine takes."""
    fakes = _module_file("fakes.py")
    policy_fakes = _module_file("policy_fakes.py")
    probe = tmp_path / "marketplace_probe.py"
    probe.write_text(
        textwrap.dedent(
            f"""
            from processor.marketplace.gateway import ConnectGateway as Gateway
            from processor.marketplace.protocol import Marketplace
            from {_module_name(fakes)} import FakeMarketplace
            from {_module_name(policy_fakes)} import PolicyMarketplace


            def markets(gateway: Gateway) -> list[Marketplace]:
                return [gateway, FakeMarketplace(), PolicyMarketplace()]
            """
        )
    )
    done = _run(
        "-m",
        "mypy",
        "--follow-imports=silent",
        str(fakes.relative_to(ROOT)),
        str(policy_fakes.relative_to(ROOT)),
        str(probe),
    )
    files = _files(r"^(\S+?\.py):\d+: error:", done.stdout)
    assert done.returncode == 0, _failure("mypy (fakes against Marketplace)", files, done.stdout)


def test_import_contracts_are_kept() -> None:
    # import-linter has no ``python -m`` entry; its console script is this one function.
    done = _run(
        "-c", "from importlinter.cli import lint_imports_command as run; run()", "--no-cache"
    )
    output = done.stdout + done.stderr
    modules = _files(r"\b((?:processor|cancel_sandbox)(?:\.\w+)+)", output)
    files = sorted({_file_of(module) for module in modules})
    assert done.returncode == 0, _failure("lint-imports", files, output)


def test_no_module_is_over_the_sanity_cap() -> None:
    too_long = [
        f"{path.relative_to(ROOT)} ({lines} lines)"
        for package in SIZE_CHECKED
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not too_long, f"modules over {MAX_LINES} lines; split them by subject:\n" + "\n".join(
        too_long
    )


def test_no_test_reads_a_private_attribute() -> None:
    """``obj._name`` in a test, for any ``obj`` but the test's own ``self``/``cls``."""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    ]
    assert not found, "tests reading private attributes (use a public seam):\n" + "\n".join(found)


def test_no_processor_class_inherits_from_another_processor_module() -> None:
    modules = {m.name: m for m in map(_Module.read, sorted((ROOT / "processor").rglob("*.py")))}
    crossings = [
        f"{module.path.relative_to(ROOT)}:{node.lineno}: {node.name} inherits {base}"
        for module in modules.values()
        for node in ast.walk(module.tree)
        if isinstance(node, ast.ClassDef)
        for base in _foreign_bases(node, module, modules)
    ]
    assert not crossings, (
        "classes inheriting behaviour from another processor module (compose instead, or share a "
        "Protocol):\n" + "\n".join(crossings)
    )


# -- helpers -------------------------------------------------------------------------------------


def _module_file(name: str) -> Path:
    """The test helper module ``name`` wherever the tests keep it (tests/ or one of its tiers)."""
    [path] = [p for p in sorted((ROOT / "tests").rglob(name)) if "__pycache__" not in p.parts]
    return path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _file_of(module: str) -> str:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return str(candidate.relative_to(ROOT))
    return module  # a name inside a module (module.function): the module is named already


@dataclass
class _Module:
    name: str
    path: Path
    tree: ast.Module
    # Classes defined unconditionally at the top of the module; a class defined under an ``if``
    # (a compatibility shim) stands in for the library class its import names.
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    # Local name -> dotted name it refers to, from every import in the module.
    imports: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> _Module:
        module = cls(_module_name(path), path, ast.parse(path.read_text(encoding="utf-8")))
        package = module.name if path.name == "__init__.py" else module.name.rpartition(".")[0]
        module.classes = {n.name: n for n in module.tree.body if isinstance(n, ast.ClassDef)}
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        module.imports[alias.asname] = alias.name
                    else:
                        top = alias.name.partition(".")[0]
                        module.imports[top] = top
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join([*anchor, source] if source else anchor)
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = f"{source}.{alias.name}"
        return module


def _dotted(expr: ast.expr) -> str | None:
    if isinstance(expr, ast.Subscript):  # Generic[T], Protocol[T]
        return _dotted(expr.value)
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return f"{inner}.{expr.attr}" if inner else None
    return None


def _resolve(name: str, module: _Module) -> str:
    """The dotted name a base refers to from ``module``: ``module.Class`` for its own classes."""
    first, _, rest = name.partition(".")
    if first in module.classes:
        return f"{module.name}.{name}"
    if first in module.imports:
        return module.imports[first] + (f".{rest}" if rest else "")
    return f"builtins.{name}"


def _locate(dotted: str, modules: dict[str, _Module], depth: int = 0) -> tuple[str, str] | None:
    """(module, class) of a processor class, following re-exports; None for anything else."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        owner = modules.get(".".join(parts[:cut]))
        if owner is None:
            continue
        name, rest = parts[cut], parts[cut + 1 :]
        if name in owner.classes and not rest:
            return owner.name, name
        if name in owner.imports and depth < 20:
            return _locate(".".join([owner.imports[name], *rest]), modules, depth + 1)
        return None
    return None


def _is_exempt_root(dotted: str) -> bool:
    if dotted in _EXEMPT_ROOTS:
        return True
    head, _, name = dotted.rpartition(".")
    if head == "builtins":
        found = getattr(builtins, name, None)
        return isinstance(found, type) and issubclass(found, BaseException)
    # A library's exception: its name says so (requests.RequestException, ssl.SSLError, ...).
    return name.endswith(("Error", "Exception", "Warning"))


def _is_contract(place: tuple[str, str], modules: dict[str, _Module], seen: set[str]) -> bool:
    """Whether a processor class is (through its bases) a protocol, an exception or an enum."""
    module = modules[place[0]]
    if f"{place[0]}.{place[1]}" in seen:
        return False
    seen.add(f"{place[0]}.{place[1]}")
    for expr in module.classes[place[1]].bases:
        dotted = _dotted(expr)
        if dotted is None:
            continue
        target = _resolve(dotted, module)
        located = _locate(target, modules)
        if located is None and _is_exempt_root(target):
            return True
        if located is not None and _is_contract(located, modules, seen):
            return True
    return False


def _foreign_bases(node: ast.ClassDef, module: _Module, modules: dict[str, _Module]) -> list[str]:
    foreign = []
    for expr in node.bases:
        dotted = _dotted(expr)
        located = _locate(_resolve(dotted, module), modules) if dotted else None
        if located is None or located[0] == module.name:
            continue
        if not _is_contract(located, modules, set()):
            foreign.append(".".join(located))
    return foreign
