"""Composing jobs into workflows: :func:`chain`, :func:`group` and fan-in with ``.then``.

A workflow is a small graph of task signatures (:meth:`pgqueue.Task.s`) that is enqueued whole,
in one transaction (the caller's with ``conn=``): every job is inserted at once, those with
dependencies ``blocked`` until they finish. The result of each stage flows into the next::

    chain(a.s(x=1), b.s(), c.s())        # a, then b(a's result), then c(b's result)
    group(a.s(x=1), a.s(x=2))            # both in parallel
    group(b.s(), c.s()).then(d.s())      # d([b's result, c's result]) once both finished
    chain(a.s(), group(b.s(), c.s()), d.s())   # a diamond

A stage's result goes to the first parameter of the next handler that its signature leaves
unset (after a group: the list of the members' results, in order). This module only builds the
graph (:func:`plan`); :meth:`pgqueue.App.enqueue_workflow` validates and inserts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

from pgqueue.errors import WorkflowError
from pgqueue.task import Signature

if TYPE_CHECKING:
    from pgqueue._conn import AsyncConn, SyncConn

__all__ = ["Chain", "Flow", "Group", "Planned", "WorkflowRun", "chain", "group", "plan"]

#: What a workflow is made of: signatures, chains and groups, nested.
Flow = Union[Signature, "Chain", "Group"]


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """An enqueued workflow: its ``id`` (see :meth:`pgqueue.App.workflow` and the ``workflows``
    view), the ids of its jobs in workflow order, and ``last``: the ids of its final stage (one
    job after a signature or a fan-in, the members after a group)."""

    id: str
    job_ids: list[int]
    last: list[int]


class _Composite:
    """What chains and groups share: ``then`` and ``enqueue``."""

    def then(self, *steps: Flow) -> Chain:
        """This, then ``steps`` in order (each receives the previous result)."""
        return Chain((_check(self), *(_check(s) for s in steps)))

    def enqueue(self, *, conn: SyncConn | None = None) -> WorkflowRun:
        """Enqueue the whole workflow through the first task's app (see
        :meth:`pgqueue.App.enqueue_workflow`)."""
        flow = _check(self)
        return _app(flow).enqueue_workflow(flow, conn=conn)  # type: ignore[no-any-return]

    async def enqueue_async(self, *, conn: AsyncConn | None = None) -> WorkflowRun:
        """Async twin of :meth:`enqueue`."""
        flow = _check(self)
        return await _app(flow).enqueue_workflow_async(  # type: ignore[no-any-return]
            flow, conn=conn)


@dataclass(frozen=True)
class Chain(_Composite):
    """Stages run one after the other; each receives the previous stage's result."""

    steps: tuple[Flow, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Group(_Composite):
    """Members run in parallel; a stage after the group receives their results in order."""

    members: tuple[Flow, ...] = field(default_factory=tuple)


def chain(*steps: Flow) -> Chain:
    """Run ``steps`` one after the other, each receiving the previous one's result. A step is a
    signature (``task.s(...)``), a :func:`group` or another chain."""
    if not steps:
        raise WorkflowError("chain() needs at least one step, e.g. chain(a.s(), b.s())")
    return Chain(tuple(_check(s) for s in steps))


def group(*members: Flow) -> Group:
    """Run ``members`` in parallel; ``group(...).then(d.s())`` runs ``d`` once after all of
    them finished, with their results in order."""
    if not members:
        raise WorkflowError("group() needs at least one member, e.g. group(a.s(), b.s())")
    return Group(tuple(_check(m) for m in members))


def _check(item: object) -> Flow:
    if isinstance(item, Signature | Chain | Group):
        return item
    hint = " (call task.s(...) to make one)" if hasattr(item, "s") else ""
    raise WorkflowError(f"a workflow member must be a task signature, a chain or a group, not "
                        f"{type(item).__name__}{hint}")


def _first_signature(item: Flow) -> Signature:
    while not isinstance(item, Signature):
        inner = item.steps if isinstance(item, Chain) else item.members
        if not inner:
            raise WorkflowError("an empty chain or group has no task to enqueue")
        item = inner[0]
    return item


def _app(item: Flow) -> Any:
    app = _first_signature(item).task.app
    if not hasattr(app, "enqueue_workflow"):
        raise WorkflowError("this task's app cannot enqueue workflows; use "
                            "pgqueue.App.enqueue_workflow(flow)")
    return app


@dataclass(frozen=True, slots=True)
class Planned:
    """One job of a planned workflow: its signature, the parameter that receives results
    (None: none), and what it waits for: (index of the job in the plan, position in the
    results list or None for a single result)."""

    signature: Signature
    arg: str | None
    deps: tuple[tuple[int, int | None], ...]


@dataclass(frozen=True, slots=True)
class _Incoming:
    """What the next stage waits for: job indexes, and whether their results form a list."""

    ids: tuple[int, ...] = ()
    as_list: bool = False


def plan(flow: Flow, *, limit: int = 100_000) -> tuple[list[Planned], list[int]]:
    """The jobs of ``flow`` in order (each waiting only for jobs before it: no cycle can be
    built) and the indexes of its final stage."""
    out: list[Planned] = []

    def place(item: Flow, incoming: _Incoming) -> _Incoming:
        if isinstance(item, Signature):
            arg = item.result_param() if incoming.ids else None
            deps = tuple((i, n if incoming.as_list else None)
                         for n, i in enumerate(incoming.ids))
            out.append(Planned(item, arg, deps))
            if len(out) > limit:
                raise WorkflowError(f"a workflow has at most {limit} jobs")
            return _Incoming((len(out) - 1,))
        if isinstance(item, Chain):
            if not item.steps:
                raise WorkflowError("an empty chain has nothing to run")
            for step in item.steps:
                incoming = place(_check(step), incoming)
            return incoming
        if not item.members:
            raise WorkflowError("an empty group has nothing to run")
        ends: list[int] = []
        for member in item.members:
            end = place(_check(member), incoming)
            if len(end.ids) != 1:
                raise WorkflowError("a group member must end in one task (a signature or a "
                                    "chain ending in one): its result is one item of the "
                                    "group's results")
            ends.append(end.ids[0])
        return _Incoming(tuple(ends), as_list=True)

    final = place(_check(flow), _Incoming())
    return out, list(final.ids)


def planned_ids(ids: Sequence[int], final: Sequence[int]) -> list[int]:
    """The job ids of a plan's final stage, given every job's id in plan order."""
    return [ids[i] for i in final]
