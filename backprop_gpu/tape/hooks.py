"""Gradient hooks (``Tensor.register_hook``, ``retain_grad``) and the handle that removes a hook.

A hook lives on what the engine meets: a non-leaf tensor's node, or a leaf
itself. The engine looks for hooks only once any has been registered in the
process (:data:`registered`), so a program without hooks pays nothing for them.
A non-leaf's hooks run on its whole gradient before it flows on; a leaf's run
once per backward on the sum of its incoming gradients, before it is
accumulated into ``.grad``, as in PyTorch. A leaf's post-accumulate hooks
(``Tensor.register_post_accumulate_grad_hook``) run once its ``.grad`` holds the
whole of this backward's gradient, while backward goes on with the rest of the
graph: data parallelism starts a bucket's all-reduce from them.
"""
from __future__ import annotations

import itertools
import weakref

#: how many hooks have ever been registered: the engine's one check while there are none
registered = 0
#: how many post-accumulate-grad hooks have ever been registered: the engine counts a leaf's
#: incoming gradients (to know when it has them all) only once there is one
post_registered = 0
_ids = itertools.count()


class RemovableHandle:
    """What ``register_*hook`` returns: ``remove()`` unregisters the hook (also as a context manager),
    as ``torch.utils.hooks.RemovableHandle``."""

    def __init__(self, hooks: dict):
        self.id = next(_ids)
        self._hooks = weakref.ref(hooks) if hasattr(hooks, "__weakref__") else (lambda: hooks)

    def remove(self) -> None:
        """Unregister the hook (again is a no-op)."""
        hooks = self._hooks()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class _Hooks(dict):
    """A tensor's or node's hooks by handle id (a dict subclass, so a handle can refer to it weakly)."""


def _register(owner, slot: str, hook, what: str) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"{what} expects a callable, got {type(hook).__name__}")
    hooks = getattr(owner, slot, None)
    if hooks is None:
        hooks = _Hooks()
        setattr(owner, slot, hooks)
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    return handle


def add(owner, hook) -> RemovableHandle:
    """Register ``hook`` on ``owner`` (a node or a leaf tensor, each with a ``_hooks`` slot)."""
    global registered
    handle = _register(owner, "_hooks", hook, "register_hook")
    registered += 1
    return handle


def add_post_accumulate(leaf, hook) -> RemovableHandle:
    """Register ``hook(leaf)`` to run when ``leaf.grad`` is final in a backward (a leaf's
    ``_post_accumulate_hooks`` slot)."""
    global post_registered
    handle = _register(leaf, "_post_accumulate_hooks", hook, "register_post_accumulate_grad_hook")
    post_registered += 1
    return handle


def run(hooks: dict, g, shape, wrap, unwrap):
    """``g`` through each hook in registration order; a hook may return a replacement gradient
    (of the same shape) or ``None``. ``wrap``/``unwrap`` turn the engine's gradient into the Tensor
    a hook sees and back."""
    gt = wrap(g)
    for hook in list(hooks.values()):
        r = hook(gt)
        if r is not None:
            if tuple(r.shape) != tuple(shape):
                raise RuntimeError(f"a gradient hook returned a gradient of shape {tuple(r.shape)}, but the "
                                   f"tensor's is {tuple(shape)}")
            gt = r
    return unwrap(gt)


__all__ = ["RemovableHandle", "add", "add_post_accumulate", "run", "registered", "post_registered"]
