"""What a statement's plan reads, to show partition pruning: run the store's own function against a recorder,
then EXPLAIN the statement it sent with the arguments it sent."""

from __future__ import annotations

import json


def relations(plan) -> set[str]:
    """Every table a plan scans (EXPLAIN (FORMAT JSON)); a partition pruned away is not among them. An UPDATE's
    target list names every partition (it prunes them as it starts): only the scans that find its rows count."""
    found: set[str] = set()
    stack = [json.loads(plan) if isinstance(plan, str) else plan]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "Relation Name" in node and node.get("Node Type", "").endswith("Scan"):
                found.add(node["Relation Name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


class Recorder:
    """A connection that runs every statement (so the function goes on as usual) and keeps what it sent."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.sent: list[tuple[str, tuple]] = []

    def __getattr__(self, name):
        method = getattr(self.conn, name)
        if name not in ("fetch", "fetchrow", "fetchval", "execute"):
            return method

        async def recorded(sql, *args, **kwargs):
            self.sent.append((sql, args))
            return await method(sql, *args, **kwargs)

        return recorded

    async def tables(self, index: int = -1, *, prefix: str = "") -> set[str]:
        """The tables (starting with prefix) the plan of the index-th statement sent reads."""
        sql, args = self.sent[index]
        plan = await self.conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
        return {name for name in relations(plan) if name.startswith(prefix)}
