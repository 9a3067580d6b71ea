"""The task/repository graph: dependency cycles, and renderings as text or Graphviz DOT."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .links import Link
from .repositories import KeySet, LiveRepository, TranslatedRepository, origin

if TYPE_CHECKING:
    from .kinds import PipelineTask


def _edges(tasks: Sequence[PipelineTask]) -> dict[str, set[str]]:
    """producer -> consumers, where the consumer needs (required_for_start) something the
    producer writes or is plugged into it. Tasks with a `ready=` override are left out: the
    override decides for them. Self-loops (in-place updates) do not count."""
    produced: dict[int, set[str]] = {}
    for t in tasks:
        for link in t.links.values():
            if link.is_output or link.is_status:
                produced.setdefault(id(origin(link.repo)), set()).add(t.name)
    edges: dict[str, set[str]] = {t.name: set() for t in tasks}
    for t in tasks:
        if t.has_ready_override:
            continue
        for link in t.links.values():
            if not link.required_for_start:
                continue
            sources = set(produced.get(id(origin(link.repo)), ()))
            if link.upstream is not None:
                sources.add(link.upstream)
            for producer in sources - {t.name}:
                edges.setdefault(producer, set()).add(t.name)
    return edges


def _path_back(edges: dict[str, set[str]], start: str, members: set[str]) -> list[str]:
    """A cycle start -> ... -> start inside one strongly connected component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for nxt in sorted(edges.get(node, ())):
            if nxt not in members:
                continue
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if nxt not in parent:
                parent[nxt] = node
                queue.append(nxt)
    return [start, start]


def dependency_cycles(tasks: Sequence[PipelineTask]) -> list[list[str]]:
    """Each group of tasks that wait on each other's output, as one cycle path
    (`[a, b, a]`); a pipeline with such a group can never start it."""
    edges = _edges(tasks)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [_path_back(edges, min(g), g) for g in sorted(groups, key=min)]


# -- rendering ----------------------------------------------------------------------------------
def _role(link: Link) -> str:
    if link.is_output:
        return "->"
    if link.is_input or link.required_for_start:
        return "<-"
    return "--"


def _describe(repo: KeySet) -> str:
    if isinstance(repo, TranslatedRepository):
        return f"{_describe(repo.source)} via {repo.translator.name!r}"
    return f"{type(repo).__name__} {repo.name!r}"


def render_text(tasks: Sequence[PipelineTask]) -> str:
    """One block per task: each link with its direction, dispositions and repository."""
    lines: list[str] = []
    for t in tasks:
        header = f"task {t.name} ({t.kind})"
        if t.upstreams:
            header += f" after {', '.join(sorted(t.upstreams))}"
        lines.append(header)
        width = max(len(n) for n in t.links)
        for name, link in t.links.items():
            source = f"  from {link.upstream}.{link.upstream_link}" if link.upstream else ""
            lines.append(
                f"  {_role(link)} {name:<{width}}  [{', '.join(link.flags)}]  "
                f"{_describe(link.repo)}{source}"
            )
        if t.has_ready_override:
            lines.append(f"  ready = {t.ready.name}")
    return "\n".join(lines) + "\n"


def _q(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return '"' + escaped + '"'


def render_dot(tasks: Sequence[PipelineTask]) -> str:
    """Graphviz DOT: tasks are boxes, repositories ellipses; solid edges carry data, dashed
    edges only steer readiness. Each task's own `live` set is left out."""
    out = ["digraph pipeline {", "  rankdir=LR;"]
    repos: dict[int, tuple[str, KeySet]] = {}  # by identity: shared repositories meet
    edges: list[str] = []
    for t in tasks:
        out.append(f"  {_q('task:' + t.name)} [shape=box, label={_q(t.name + chr(10) + t.kind)}];")
        for name, link in t.links.items():
            repo = origin(link.repo)
            if isinstance(repo, LiveRepository):
                continue
            node_id, _ = repos.setdefault(id(repo), (f"repo{len(repos) + 1}", repo))
            node, task_node = _q(node_id), _q("task:" + t.name)
            style = "solid" if (link.is_input or link.is_output) else "dashed"
            label = name
            if isinstance(link.repo, TranslatedRepository):
                label += f" (via {link.repo.translator.name})"
            if link.is_output or (link.is_status and link.upstream is None):
                edges.append(f"  {task_node} -> {node} [label={_q(label)}, style={style}];")
            else:
                edges.append(f"  {node} -> {task_node} [label={_q(label)}, style={style}];")
    for node_id, repo in repos.values():
        out.append(f"  {_q(node_id)} [shape=ellipse, label={_q(repo.name)}];")
    out += edges
    out.append("}")
    return "\n".join(out) + "\n"
