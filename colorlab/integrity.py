"""Forbidden names in graded exercises: the static check the grader runs on the students' code.

An exercise may declare, in its solution cell's metadata, the names its solution must not use::

    "colorlab": {"forbidden": ["colorlab.evaluate", "skimage.metrics"]}

so that ``return colorlab.evaluate.psnr(pred, target)`` does not earn the points for writing PSNR.
A name forbids itself and everything below it (``colorlab.evaluate`` covers
``colorlab.evaluate.psnr``). The check reads the code with `ast`, never runs it, and resolves what
each name stands for the way Python would bind it: ``import a.b as x``, ``from a.b import c as d``,
the chapter's own imports in earlier cells, attribute chains, ``getattr(module, "name")``, and
module-level assignments (``ev = colorlab.evaluate``; ``criterion = losses.GANLoss()`` makes
``criterion`` stand for ``colorlab.losses.GANLoss``). Names a function binds for itself
(parameters, local variables) shadow those of the notebook, as they do in Python.

A static check cannot follow code that builds names at run time, so wherever an exercise forbids
names, student code may not use the doors to it either: ``eval``, ``exec``, ``__import__``,
``importlib``, ``sys.modules``, ``globals()``, ``getattr`` with a computed name, IPython magics.
Assigning to a module's attributes (``torch.allclose = ...``), which would blind the tests, is
refused in every exercise.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence

from IPython.core.inputtransformer2 import TransformerManager

# Calls and names that reach objects by strings or rebind the interpreter's own lookups.
DYNAMIC_NAMES = frozenset(
    {"eval", "exec", "compile", "__import__", "globals", "locals", "vars", "get_ipython", "__builtins__"}
)
DYNAMIC_MODULES = ("importlib", "sys.modules", "builtins", "runpy")


def python_source(cell_source: str) -> ast.Module | None:
    """The cell as Python (IPython magics become ``get_ipython()`` calls); None if it cannot run anyway."""
    try:
        return ast.parse(TransformerManager().transform_cell(cell_source))
    except (SyntaxError, ValueError):
        return None


def _covers(forbidden: str, name: str) -> bool:
    return name == forbidden or name.startswith(forbidden + ".")


def _imported(node: ast.Import | ast.ImportFrom) -> list[tuple[str, str]]:
    """(bound name, dotted name it stands for) for each name an import statement binds."""
    if isinstance(node, ast.Import):
        # `import a.b` binds `a`; `import a.b as x` binds x to a.b
        return [(alias.asname or alias.name.split(".")[0], alias.name if alias.asname else alias.name.split(".")[0])
                for alias in node.names]
    module = "." * node.level + (node.module or "")
    return [(alias.asname or alias.name, f"{module}.{alias.name}") for alias in node.names]


class NameResolver:
    """What the notebook's global names stand for, learnt cell by cell in execution order."""

    def __init__(self) -> None:
        self.globals: dict[str, set[str]] = {}

    def learn(self, tree: ast.Module) -> None:
        """Record the module-level bindings of one cell (imports and assignments)."""
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for bound, dotted in _imported(node):
                    self.globals[bound] = {dotted}
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                origins = set().union(*(self.stands_for(sub, set()) for sub in ast.walk(node.value)))
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    for name in ast.walk(target):
                        if isinstance(name, ast.Name):
                            self.globals[name.id] = set(origins)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                self.globals.pop(node.name, None)

    def stands_for(self, node: ast.AST, local: set[str]) -> set[str]:
        """The dotted names an expression may evaluate to, as far as the bindings tell."""
        if isinstance(node, ast.Name):
            return set() if node.id in local else set(self.globals.get(node.id, ()))
        if isinstance(node, ast.Attribute):
            return {f"{base}.{node.attr}" for base in self.stands_for(node.value, local)}
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in local:
            constant = node.args[1] if node.func.id == "getattr" and len(node.args) >= 2 else None
            if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                return {f"{base}.{constant.value}" for base in self.stands_for(node.args[0], local)}
        return set()


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> set[str]:
    """Parameters and names assigned inside a function: they shadow the notebook's globals there."""
    arguments = function.args
    names = {arg.arg for arg in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
    names |= {arg.arg for arg in (arguments.vararg, arguments.kwarg) if arg is not None}
    body = function.body if isinstance(function.body, list) else [function.body]
    for statement in body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names |= {bound for bound, _ in _imported(node)}
    return names


class _Checker(ast.NodeVisitor):
    """Collects (line, dotted name) for every use of a name and every import in one cell."""

    def __init__(self, resolver: NameResolver) -> None:
        self.resolver = resolver
        self.local: set[str] = set()
        self.uses: list[tuple[int, str]] = []
        self.dynamic: list[tuple[int, str]] = []
        self.tampering: list[tuple[int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        outer = self.local
        self.local = outer | _local_names(node)
        self.generic_visit(node)
        self.local = outer

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _use(self, node: ast.expr) -> None:
        """Record what `node` stands for, the most specific name first (stable messages)."""
        names = self.resolver.stands_for(node, self.local)
        self.uses += [(node.lineno, name) for name in sorted(names, key=lambda name: (-len(name), name))]

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, ast.Import):  # `import a.b` binds only `a`, but loads a.b
            self.uses += [(node.lineno, alias.name) for alias in node.names]
            return
        for _, dotted in _imported(node):
            self.uses.append((node.lineno, dotted.removesuffix(".*")))
            if dotted.endswith(".*"):
                self.uses.append((node.lineno, dotted))

    visit_ImportFrom = visit_Import

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DYNAMIC_NAMES and node.id not in self.local:
            self.dynamic.append((node.lineno, node.id))
        if isinstance(node.ctx, ast.Load):
            self._use(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        names = self.resolver.stands_for(node, self.local)
        if isinstance(node.ctx, ast.Store) and self.resolver.stands_for(node.value, self.local):
            self.tampering.append((node.lineno, min(names)))
        self._use(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if isinstance(node.func, ast.Name) and node.func.id in {"getattr", "setattr", "delattr"}:
            constant = len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
            targets = self.resolver.stands_for(node.args[0], self.local) if node.args else set()
            if node.func.id != "getattr" and targets:
                attribute = f".{node.args[1].value}" if constant else ""
                self.tampering.append((node.lineno, min(targets) + attribute))
            if node.func.id == "getattr" and not constant:
                self.dynamic.append((node.lineno, "getattr with a computed name"))
            self._use(node)
        self.generic_visit(node)


def _first_forbidden(uses: Iterable[tuple[int, str]], forbidden: Sequence[str]) -> tuple[int, str, str] | None:
    for line, name in uses:
        if name.endswith(".*"):  # a star import brings in every name below its module
            hit = next((f for f in forbidden if _covers(name[:-2], f) or _covers(f, name[:-2])), None)
        else:
            hit = next((f for f in forbidden if _covers(f, name)), None)
        if hit is not None:
            return line, name.removesuffix(".*"), hit
    return None


def check_cell(tree: ast.Module, resolver: NameResolver, forbidden: Sequence[str]) -> str | None:
    """Why one cell of student code breaks the rules (first problem, one line), or None.

    `resolver` holds the bindings of the cells run before this one; the caller teaches it this
    cell afterwards with `resolver.learn(tree)`.
    """
    checker = _Checker(resolver)
    checker.visit(tree)
    if checker.tampering:
        line, name = checker.tampering[0]
        return f"line {line} changes {name}, a library the tests rely on"
    hit = _first_forbidden(checker.uses, forbidden)
    if hit is not None:
        line, name, rule = hit
        shown = name if name == rule else f"{name} (under {rule})" if _covers(rule, name) else f"{name}.* ({rule})"
        return f"line {line} uses {shown}, which this exercise forbids"
    dynamic = checker.dynamic + [
        (line, name) for line, name in checker.uses if any(_covers(module, name) for module in DYNAMIC_MODULES)
    ]
    if forbidden and dynamic:
        line, name = dynamic[0]
        return f"line {line} uses {name}, which exercises with forbidden names do not allow"
    return None
