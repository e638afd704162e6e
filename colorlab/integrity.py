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
(parameters, local variables) shadow those of the notebook, as they do in Python, and stand for
what they are bound to (``c = colorlab.color`` in a function, a default argument, ``for``,
``with ... as``, ``:=``, class attributes). Bindings are flow-insensitive: a name that stands for
something anywhere in the notebook (the same cell included) stands for it everywhere.

Every name is then resolved to the object it denotes, in the grader (modules already imported, or
of the packages the rules name): ``colorlab.io.chroma`` is ``colorlab.evaluate.chroma``,
``torch.sys.modules`` is ``sys.modules``, and both are checked under their canonical name too.
An exercise may instead (or as well) declare a whitelist, ``"allowed": ["torch", "math"]``:
then every name its solution reaches must resolve under one of them.

A static check cannot follow code that builds names at run time, so wherever an exercise forbids
names, student code may not use the doors to it either: ``eval``, ``exec``, ``__import__``,
``importlib``, ``sys.modules``, ``globals()``, ``getattr`` with a computed name, IPython magics,
``operator.attrgetter``, ``inspect``, ``gc`` and every dunder attribute (``__dict__``,
``__getattribute__``, ``__globals__``) but ``__init__``.
Assigning to a module's attributes (``torch.allclose = ...``), which would blind the tests, is
refused in every exercise.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import sys
import types
from collections.abc import Iterable, Mapping, Sequence

from IPython.core.inputtransformer2 import TransformerManager

# Calls and names that reach objects by strings or rebind the interpreter's own lookups.
DYNAMIC_NAMES = frozenset(
    {"eval", "exec", "compile", "__import__", "globals", "locals", "vars", "get_ipython", "__builtins__"}
)
DYNAMIC_MODULES = ("importlib", "sys.modules", "builtins", "runpy", "operator.attrgetter", "operator.methodcaller",
                   "inspect", "gc", "ctypes", "pkgutil", "types.ModuleType")
SAFE_DUNDERS = frozenset({"__init__"})
# Packages the check may import in the grader to learn what a name denotes (besides those the rules name).
RESOLVABLE = frozenset({"colorlab", "torch", "torchvision", "numpy", "math", "os", "sys", "operator", "skimage",
                        "importlib", "builtins", "inspect", "gc", "types", "functools"})


def python_source(cell_source: str) -> ast.Module | None:
    """The cell as Python (IPython magics become ``get_ipython()`` calls); None if it cannot run anyway."""
    try:
        return ast.parse(TransformerManager().transform_cell(cell_source))
    except (SyntaxError, ValueError):
        return None  # RecursionError and MemoryError (absurd nesting) are the caller's: zero points


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


def _target_names(target: ast.AST) -> list[str]:
    """The names an assignment target binds (``a``, ``a, *b``), not attributes or items it stores into."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [name for element in target.elts for name in _target_names(element)]
    return _target_names(target.value) if isinstance(target, ast.Starred) else []


def bindings(statements: Iterable[ast.stmt]) -> Iterable[tuple[str, ast.AST | None]]:
    """(name, expression it is bound to, or None) for each binding of one scope, nested scopes excluded.

    Classes are scopes of their own, but their attributes are reachable from outside: they are
    bound as ``Class.attribute``.
    """
    stack = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from ((bound, None) for bound, _ in _imported(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, None
            stack += [*node.decorator_list, *node.args.defaults, *filter(None, node.args.kw_defaults)]
            continue
        elif isinstance(node, ast.ClassDef):
            yield node.name, None
            for name, value in bindings(node.body):
                yield f"{node.name}.{name}", value
            stack += [*node.bases, *node.decorator_list]
            continue
        elif isinstance(node, ast.Lambda):
            continue
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                yield from ((name, node.value) for name in _target_names(target))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            yield from ((name, node.iter) for name in _target_names(node.target))
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            yield from ((name, node.context_expr) for name in _target_names(node.optional_vars))
        elif isinstance(node, ast.NamedExpr):
            yield node.target.id, node.value
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, None
        stack += list(ast.iter_child_nodes(node))


class NameResolver:
    """What the notebook's global names stand for, learnt cell by cell (flow-insensitive: bindings add up)."""

    def __init__(self) -> None:
        self.globals: dict[str, set[str]] = {}

    def learn(self, tree: ast.Module) -> None:
        """Record the module-level bindings of one cell: imports, assignments, loops, ``with``, ``:=``, classes."""
        pending = list(bindings(tree.body))
        for name, dotted in (pair for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))
                             for pair in _imported(node)):
            self.globals.setdefault(name, set()).add(dotted)
        for _ in range(3):  # `c = colorlab; e = c.evaluate`: a few rounds reach the fixpoint of real code
            for name, value in pending:
                if value is not None:
                    self.globals.setdefault(name, set()).update(self.origins(value, {}))

    def origins(self, value: ast.AST, local: Mapping[str, set[str]]) -> set[str]:
        """Everything an expression may stand for: the names of all its parts (an over-approximation)."""
        return set().union(*(self.stands_for(sub, local) for sub in ast.walk(value)))

    def stands_for(self, node: ast.AST, local: Mapping[str, set[str]]) -> set[str]:
        """The dotted names an expression may evaluate to, as far as the bindings tell."""
        if isinstance(node, ast.Name):
            return set(local[node.id]) if node.id in local else set(self.globals.get(node.id, ()))
        if isinstance(node, ast.Attribute):
            found = {f"{base}.{node.attr}" for base in self.stands_for(node.value, local)}
            if isinstance(node.value, ast.Name):  # a class attribute
                found |= self.globals.get(f"{node.value.id}.{node.attr}", set())
            return found
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in local:
            constant = node.args[1] if node.func.id == "getattr" and len(node.args) >= 2 else None
            if isinstance(constant, ast.Constant) and isinstance(constant.value, str):
                return {f"{base}.{constant.value}" for base in self.stands_for(node.args[0], local)}
        return set()


def _local_names(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda, resolver: NameResolver,
                 outer: Mapping[str, set[str]]) -> dict[str, set[str]]:
    """Names a function binds (parameters, locals) and what they stand for: defaults and assigned values."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    names: dict[str, set[str]] = {arg.arg: set() for arg in [*positional, *arguments.kwonlyargs]}
    names |= {arg.arg: set() for arg in (arguments.vararg, arguments.kwarg) if arg is not None}
    defaults = list(zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults))
    defaults += [(arg, value) for arg, value in zip(arguments.kwonlyargs, arguments.kw_defaults) if value is not None]
    for arg, value in defaults:
        names[arg.arg] |= resolver.origins(value, outer)
    body = function.body if isinstance(function.body, list) else [ast.Expr(function.body)]
    bound = list(bindings(body))
    for name, _ in bound:
        names.setdefault(name.split(".")[0], set())
    for node in (n for statement in body for n in ast.walk(statement) if isinstance(n, (ast.Import, ast.ImportFrom))):
        for alias, dotted in _imported(node):
            names.setdefault(alias, set()).add(dotted)
    for _ in range(3):
        for name, value in bound:
            if value is not None:
                names.setdefault(name, set()).update(resolver.origins(value, {**outer, **names}))
    return names


@functools.lru_cache(maxsize=4096)
def canonical(dotted: str, extra: frozenset[str] = frozenset()) -> str | None:
    """The name of the object `dotted` denotes, by its own module (re-exports resolved), or None if unknown.

    Only modules already imported, or of the packages in RESOLVABLE and `extra`, are imported here;
    attributes of other objects are read without running any code (`inspect.getattr_static`).
    """
    parts = dotted.split(".")
    if parts[0] not in sys.modules and parts[0] not in RESOLVABLE | extra:
        return None
    try:
        obj: object = importlib.import_module(parts[0])
    except Exception:  # noqa: BLE001: a name that does not import stands for nothing we know
        return None
    name, rest = parts[0], parts[1:]
    while rest:
        attr = rest[0]
        if isinstance(obj, types.ModuleType):
            try:
                obj = getattr(obj, attr) if hasattr(obj, attr) else importlib.import_module(f"{obj.__name__}.{attr}")
            except Exception:  # noqa: BLE001
                break
        else:
            try:
                obj = inspect.getattr_static(obj, attr)
            except AttributeError:
                break
        rest = rest[1:]
        if isinstance(obj, types.ModuleType):
            name = obj.__name__
        elif getattr(obj, "__module__", None) and getattr(obj, "__qualname__", None) and callable(obj):
            name = f"{obj.__module__}.{obj.__qualname__}"
        else:
            name = f"{name}.{attr}"
    return ".".join([name, *rest])


class _Checker(ast.NodeVisitor):
    """Collects (line, dotted name) for every use of a name and every import in one cell."""

    def __init__(self, resolver: NameResolver) -> None:
        self.resolver = resolver
        self.local: dict[str, set[str]] = {}
        self.uses: list[tuple[int, str]] = []
        self.dynamic: list[tuple[int, str]] = []
        self.tampering: list[tuple[int, str]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        outer = self.local
        self.local = {**outer, **_local_names(node, self.resolver, outer)}
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
        if (node.id in DYNAMIC_NAMES and node.id not in self.local) or (
                node.id.startswith("__") and node.id.endswith("__") and node.id not in SAFE_DUNDERS | {"__name__"}):
            self.dynamic.append((node.lineno, node.id))
        if isinstance(node.ctx, ast.Load):
            self._use(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        names = self.resolver.stands_for(node, self.local)
        if isinstance(node.ctx, ast.Store) and self.resolver.stands_for(node.value, self.local):
            self.tampering.append((node.lineno, min(names)))
        if node.attr.startswith("__") and node.attr.endswith("__") and node.attr not in SAFE_DUNDERS:
            self.dynamic.append((node.lineno, f"the attribute {node.attr}"))
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
            if constant and str(node.args[1].value).startswith("__"):
                self.dynamic.append((node.lineno, f"the attribute {node.args[1].value}"))
            self._use(node)
        self.generic_visit(node)


def _names(name: str, extra: frozenset[str]) -> list[str]:
    """A used name and the canonical name of what it denotes (a re-export's own module), if different."""
    real = canonical(name.removesuffix(".*"), extra)
    return [name] + ([real] if real and real != name.removesuffix(".*") else [])


def _first_forbidden(uses: Iterable[tuple[int, str]], forbidden: Sequence[str]) -> tuple[int, str, str] | None:
    extra = frozenset(name.split(".")[0] for name in forbidden)
    for line, used in uses:
        for name in _names(used, extra):
            if name.endswith(".*"):  # a star import brings in every name below its module
                hit = next((f for f in forbidden if _covers(name[:-2], f) or _covers(f, name[:-2])), None)
            else:
                hit = next((f for f in forbidden if _covers(f, name)), None)
            if hit is not None:
                return line, name.removesuffix(".*"), hit
    return None


def check_cell(tree: ast.Module, resolver: NameResolver, forbidden: Sequence[str],
               allowed: Sequence[str] | None = None, foreign: Iterable[str] = ()) -> str | None:
    """Why one cell of student code breaks the rules (first problem, one line), or None.

    `resolver` holds the bindings of the cells run before this one; the caller teaches it this
    cell afterwards with `resolver.learn(tree)` (its bindings count here already). With
    `allowed`, every name the cell reaches must resolve under one of them, and it may not use the
    `foreign` names (those the student's other cells define: a helper there could call anything).
    A cell nested too deeply to read (RecursionError) is the caller's to refuse.
    """
    resolver.learn(tree)
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
        (line, name) for line, used in checker.uses for name in _names(used, frozenset())
        if any(_covers(module, name.removesuffix(".*")) for module in DYNAMIC_MODULES)
    ]
    if (forbidden or allowed is not None) and dynamic:
        line, name = dynamic[0]
        return f"line {line} uses {name}, which exercises with forbidden names do not allow"
    if allowed is not None:
        own = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
        own |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
        own |= {name.split(".")[0] for name, _ in bindings(tree.body)}
        outside = next((node for node in ast.walk(tree) if isinstance(node, ast.Name) and
                        isinstance(node.ctx, ast.Load) and node.id in set(foreign) - own
                        and not resolver.globals.get(node.id)), None)  # a name that stands for nothing known
        if outside is not None:
            return f"line {outside.lineno} uses {outside.id}, which the student's code defines outside the solution"
        extra = frozenset(name.split(".")[0] for name in allowed)
        for line, used in checker.uses:
            names = _names(used, extra)
            name = names[-1].removesuffix(".*")  # a module on the way to an allowed name is no use by itself
            if not any(_covers(rule, name) or (_covers(name, rule) and not names[-1].endswith(".*")) for rule in allowed):
                return f"line {line} uses {names[-1]}, which is not among the names this exercise allows " \
                       f"({', '.join(allowed)})"
    return None
