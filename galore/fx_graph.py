"""Small helpers for reading a traced ``torch.fx`` graph of a head: what a node calls, and membership tests that
survive unhashable targets. Used by the structured attribution paths (``attribution``) and the pooled-head split
(``pooled_head``), which both decide from the graph which closed forms a head allows."""
from __future__ import annotations

import torch
from torch import nn


def node_op(node: torch.fx.Node, modules: dict[str, nn.Module]):
    """The module a ``call_module`` node calls (from ``modules``, the graph module's ``named_modules()``), else the
    node's target: a function, a method name, a placeholder's name."""
    return modules.get(str(node.target)) if node.op == "call_module" else node.target


def is_in(op, ops: set) -> bool:
    """``op in ops``, False for an unhashable target instead of a TypeError."""
    try:
        return op in ops
    except TypeError:  # unhashable target
        return False
