"""The judgement, made outside the student's code: hidden tests in the grader, the student's functions behind a wire.

A tests cell of the teacher's runs in the grader's own process, in a namespace of its own: the
chapter's imports and parameters (the teacher's code), and, for each function a solution cell
defines, a `RemoteFunction` that calls the student's function in the sandboxed kernel
(`colorlab.sandbox`). Arguments go to the kernel as a file the kernel loads; what comes back is
plain data only, written by the kernel as JSON with numbers, strings, lists and numpy arrays in
``.npy`` bytes, and read here with ``allow_pickle=False``: the tests compare the grader's own
tensors with the grader's own torch. A value that is not plain data fails the tests cell with one
line. Two things of the tensor world cross the wire as data as well: gradients (a result that
needs them is a node of the grader's autograd graph whose backward asks the kernel for the
vector-Jacobian product) and `torch.nn.Module` arguments, whose parameters, buffers, flags and
training modes the kernel sends back after the call and the grader copies into its own module.
Values the tests read from the chapter (``bins``) come from the kernel the same way.
"""

from __future__ import annotations

import ast
import base64
import builtins
import io
import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np

from .sandbox import Sandbox

MIME = "application/x-colorlab-plain+json"
MAX_REPLY_BYTES = 64 * 2**20
PLAIN_KINDS = "biufc"  # numpy dtype kinds that are numbers: bool, int, uint, float, complex

# Runs in the kernel for every call; it relies on nothing the student's code defined.
KERNEL_SIDE = r'''
def _colorlab_wire(request_path, names):
    import base64, io, json, pickle, sys
    import numpy as np
    from IPython import get_ipython
    from IPython.display import display

    torch = sys.modules.get("torch")  # no tensor can exist without it, and importing it takes seconds
    Tensor, Module = (torch.Tensor, torch.nn.Module) if torch else ((), ())
    store = get_ipython().user_ns.setdefault("_colorlab_calls", {})
    tensors = []

    def array(value):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        return base64.b64encode(buffer.getvalue()).decode()

    def encode(value):
        if isinstance(value, float):  # as text: JSON has no nan or inf
            return {"t": "float", "v": repr(value)}
        if value is None or isinstance(value, (bool, int, str)):
            return {"t": "py", "v": value}
        if isinstance(value, Tensor):
            tensors.append(value)
            return {"t": "tensor", "npy": array(value.detach().cpu().numpy()), "grad": bool(value.requires_grad)}
        if isinstance(value, np.ndarray):
            return {"t": "ndarray", "npy": array(value)}
        if isinstance(value, np.generic):
            return {"t": "ndarray", "npy": array(np.asarray(value)), "scalar": True}
        if isinstance(value, (tuple, list)):
            return {"t": type(value).__name__, "items": [encode(item) for item in value]}
        if isinstance(value, dict) and all(isinstance(key, str) for key in value):
            return {"t": "dict", "items": {key: encode(item) for key, item in value.items()}}
        return {"t": "other", "type": type(value).__name__}

    def state(module):
        return {"params": {n: [array(p.detach().cpu().numpy()), bool(p.requires_grad)]
                           for n, p in module.named_parameters()},
                "buffers": {n: array(b.detach().cpu().numpy()) for n, b in module.named_buffers()},
                "training": {n: bool(m.training) for n, m in module.named_modules()}}

    with open(request_path, "rb") as file:
        request = pickle.load(file)
    if request["kind"] == "value":
        reply = {"value": encode(get_ipython().user_ns[request["name"]])}
    elif request["kind"] == "vjp":
        outputs, inputs = store[request["call"]]
        pairs = [(o, g) for o, g in zip(outputs, request["grads"]) if o.requires_grad and g is not None]
        grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True) \
            if pairs and inputs else [None] * len(inputs)
        reply = {"grads": [None if g is None else array(g.detach().cpu().numpy()) for g in grads]}
    else:
        args, kwargs = request["args"], request["kwargs"]
        result = get_ipython().user_ns[request["name"]](*args, **kwargs)
        value = encode(result)
        leaves = [a for a in list(args) + list(kwargs.values()) if isinstance(a, Tensor) and a.requires_grad]
        store[request["call"]] = (list(tensors), leaves)
        modules = {str(i): state(a) for i, a in enumerate(list(args) + list(kwargs.values()))
                   if isinstance(a, Module)}
        reply = {"value": value, "modules": modules}
    display({names: json.dumps(reply)}, raw=True)
'''


class StudentError(Exception):
    """The student's function raised in the kernel: the message is its one line (``ValueError: ...``)."""


class NotPlainData(Exception):
    """What the kernel sent back is not plain data (or not what the protocol allows)."""


def _array(text: str) -> np.ndarray:
    array = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    if array.dtype.kind not in PLAIN_KINDS:
        raise NotPlainData(f"an array of dtype {array.dtype}")
    return array


def decode(encoded: Any, tensors: list | None = None) -> Any:
    """The grader's own objects for a reply of the kernel (torch tensors as plain `torch.Tensor`)."""
    import torch

    if not isinstance(encoded, dict) or not isinstance(encoded.get("t"), str):
        raise NotPlainData("a malformed reply")
    kind = encoded["t"]
    if kind == "py":
        value = encoded.get("v")
        if not (value is None or isinstance(value, (bool, int, str))):
            raise NotPlainData("a malformed value")
        return value
    if kind == "float" and isinstance(encoded.get("v"), str):
        try:
            return float(encoded["v"])
        except ValueError:
            raise NotPlainData("a malformed number") from None
    if kind == "tensor":
        tensor = torch.from_numpy(_array(encoded["npy"]).copy())
        if tensors is not None:
            tensors.append((tensor, bool(encoded.get("grad"))))
        return tensor
    if kind == "ndarray":
        array = _array(encoded["npy"]).copy()
        return array[()] if encoded.get("scalar") else array
    if kind in {"tuple", "list"} and isinstance(encoded.get("items"), list):
        items = [decode(item, tensors) for item in encoded["items"]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict" and isinstance(encoded.get("items"), dict):
        return {str(key): decode(item, tensors) for key, item in encoded["items"].items()}
    if kind == "other":
        raise NotPlainData(f"a {str(encoded.get('type'))[:40]}")
    raise NotPlainData(f"an unknown kind {kind[:20]!r}")


class Wire:
    """The narrow channel to the sandboxed kernel: requests as files it loads, replies as plain JSON."""

    def __init__(self, sandbox: Sandbox, timeout: Callable[[], float]) -> None:
        self.sandbox = sandbox
        self.timeout = timeout  # seconds left for this call (the cell's and the submission's budgets)
        self.calls = 0
        self.broken: str | None = None  # "timeout" or "dead": the kernel must start again

    def ask(self, request: dict) -> dict:
        path = self.sandbox.runtime / "request.pickle"  # the grader's data, for the kernel: pickle is fine this way
        with open(path, "wb") as file:
            pickle.dump(request, file)
        path.chmod(0o644)
        code = f"{KERNEL_SIDE}\n_colorlab_wire({str(path)!r}, {MIME!r})"
        outcome = self.sandbox.execute(code, self.timeout(), mime=MIME, max_output_bytes=MAX_REPLY_BYTES)
        if outcome.status in {"timeout", "dead"}:
            self.broken = outcome.status
            raise RuntimeError("the student's function " + ("ran past the time limit" if outcome.status == "timeout"
                                                            else "killed the kernel"))
        if outcome.status == "error":
            raise StudentError(outcome.error)
        if len(outcome.data) != 1 or not isinstance(outcome.data[0], str):
            raise NotPlainData("no reply, or more than one")
        try:
            return json.loads(outcome.data[0])
        except ValueError:
            raise NotPlainData("a reply that is not JSON") from None


class RemoteFunction:
    """Stands in the tests for a function the student defined: the call runs in the kernel."""

    def __init__(self, wire: Wire, name: str) -> None:
        self.wire, self.name = wire, name

    def __repr__(self) -> str:
        return f"<the student's {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch

        self.wire.calls += 1
        call = self.wire.calls
        sent = [*args, *kwargs.values()]
        leaves = [a for a in sent if isinstance(a, torch.Tensor) and a.requires_grad]
        strip = lambda a: a.detach().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a  # noqa: E731
        reply = self.wire.ask({"kind": "call", "name": self.name, "call": call,
                               "args": [strip(a) for a in args], "kwargs": {k: strip(a) for k, a in kwargs.items()}})
        if not isinstance(reply, dict) or "value" not in reply:
            raise NotPlainData("a malformed reply")
        tensors: list = []
        value = decode(reply["value"], tensors)
        _write_back(sent, reply.get("modules", {}))
        if leaves and any(needs for _, needs in tensors):
            value = _attach(value, tensors, leaves, self.wire, call)
        return value


def _write_back(sent: list, modules: Any) -> None:
    """Copy what the student's function did to a module argument into the grader's module."""
    import torch

    if not isinstance(modules, dict):
        raise NotPlainData("a malformed module state")
    for index, argument in enumerate(sent):
        if not isinstance(argument, torch.nn.Module):
            continue
        state = modules.get(str(index))
        params, buffers, training = (state or {}).get("params"), (state or {}).get("buffers"), (state or {}).get("training")
        ours = dict(argument.named_parameters())
        if not isinstance(params, dict) or set(params) != set(ours) or not isinstance(buffers, dict) \
                or not isinstance(training, dict):
            raise NotPlainData("a module whose parameters changed")
        with torch.no_grad():
            for name, parameter in ours.items():
                data, flag = params[name]
                array = _array(data)
                if array.shape != tuple(parameter.shape):
                    raise NotPlainData(f"parameter {name} of another shape")
                parameter.copy_(torch.from_numpy(array.copy()))
                parameter.requires_grad_(bool(flag))
            for name, buffer in argument.named_buffers():
                if name in buffers:
                    buffer.copy_(torch.from_numpy(_array(buffers[name]).copy()).to(buffer.dtype).reshape(buffer.shape))
        for name, module in argument.named_modules():
            if name in training:
                module.training = bool(training[name])


def _attach(value: Any, tensors: list, leaves: list, wire: Wire, call: int) -> Any:
    """`value` with its tensors made differentiable in the grader: backward asks the kernel for the gradient."""
    import torch

    class Remote(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):  # noqa: ANN001, ANN205
            outputs = tuple(tensor.clone() for tensor, _ in tensors)
            ctx.mark_non_differentiable(*[o for o, (_, needs) in zip(outputs, tensors) if not needs])
            return outputs

        @staticmethod
        def backward(ctx, *grads):  # noqa: ANN001, ANN205
            reply = wire.ask({"kind": "vjp", "call": call, "grads": [None if g is None else g.detach() for g in grads]})
            arrays = reply.get("grads") if isinstance(reply, dict) else None
            if not isinstance(arrays, list) or len(arrays) != len(leaves):
                raise NotPlainData("a malformed gradient")
            return tuple(None if a is None else torch.from_numpy(_array(a).copy()).reshape(leaf.shape)
                         for a, leaf in zip(arrays, leaves))

    attached = iter(Remote.apply(*leaves))
    replacements = {id(tensor): next(attached) for tensor, _ in tensors}
    return _replace(value, replacements)


def _replace(value: Any, replacements: dict) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_replace(item, replacements) for item in value)
    if isinstance(value, dict):
        return {key: _replace(item, replacements) for key, item in value.items()}
    return replacements.get(id(value), value)


def free_names(tree: ast.Module) -> list[str]:
    """Names a tests cell reads that it does not bind itself (nor Python's builtins)."""
    bound = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {alias.asname or alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    loads = [node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)]
    return sorted(set(loads) - bound - set(dir(builtins)))


def run_tests(source: str, namespace: dict, wire: Wire, student_functions: set[str]) -> str | None:
    """Run a teacher's tests cell in the grader; None if it passes, else why not (one line)."""
    from .integrity import python_source

    tree = python_source(source)
    if tree is None:
        raise ValueError("a tests cell of the answer key is not Python")
    scope = dict(namespace)
    try:
        for name in free_names(tree):
            if name in scope:
                continue
            if name in student_functions:
                scope[name] = RemoteFunction(wire, name)
            else:
                reply = wire.ask({"kind": "value", "name": name})
                scope[name] = decode(reply.get("value") if isinstance(reply, dict) else None)
        exec(compile(tree, "<tests>", "exec"), scope)  # noqa: S102: the teacher's code, in the grader
    except StudentError as error:
        return str(error)[:300]
    except NotPlainData as error:
        return f"returned {error}, not plain data (numbers, strings, arrays)"
    except Exception as error:  # noqa: BLE001: any failure of a tests cell is the exercise's reason
        message = " ".join(str(error).split())
        return f"{type(error).__name__}: {message}".rstrip(": ")[:300]
    return None
