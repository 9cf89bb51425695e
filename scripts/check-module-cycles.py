#!/usr/bin/env python3
"""Fails if any two modules of a crate use each other, directly or through others.

Every `crate::a::b` and `super::x` path in a module's code (its tests left out) is an edge
to the deepest module the path names; a cycle means two modules that cannot be read, or
changed, one without the other. Prints the module and edge counts, and each edge on a
cycle.

    ./scripts/check-module-cycles.py            # this checkout
    ./scripts/check-module-cycles.py PATH       # another checkout
"""
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")


def module_of(src, path):
    """The module path of the file `path` under the crate's `src`."""
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts)


def paths_in(path):
    """The crate:: and super:: paths named in a file's code, before its tests."""
    code = open(path, encoding="utf-8").read().split("#[cfg(test)]")[0]
    for line in code.splitlines():
        if not line.lstrip().startswith("//"):
            yield from PATH.finditer(line)


def edges_of(crate_dir):
    """The crate's modules, and its edges (module, module used)."""
    src = os.path.join(crate_dir, "src")
    named = {}
    for folder, _, files in os.walk(src):
        for name in files:
            path = os.path.join(folder, name)
            module = module_of(src, path)
            if name.endswith(".rs") and not (module and module[0] == "bin"):
                named[module] = list(paths_in(path))
    edges = set()
    for module, paths in named.items():
        for path in paths:
            base = () if path.group(1) == "crate" else module[:-1]
            target = base + tuple(path.group(2).strip(":").split("::"))
            deepest = next((target[:k] for k in range(len(target), 0, -1) if target[:k] in named), None)
            if deepest is not None and deepest != module:
                edges.add((module, deepest))
    return set(named), edges


def on_cycles(edges):
    """The edges whose target leads back to their source."""
    graph = {}
    for source, target in edges:
        graph.setdefault(source, set()).add(target)

    def reaches(start, goal):
        seen, stack = {start}, [start]
        while stack:
            node = stack.pop()
            if node == goal:
                return True
            for following in graph.get(node, ()):
                if following not in seen:
                    seen.add(following)
                    stack.append(following)
        return False

    return sorted((source, target) for source, target in edges if reaches(target, source))


def main():
    total_modules = total_edges = 0
    cycles = []
    crates = os.path.join(ROOT, "crates")
    for crate in sorted(os.listdir(crates)):
        if not os.path.isdir(os.path.join(crates, crate, "src")):
            continue
        modules, edges = edges_of(os.path.join(crates, crate))
        total_modules += len(modules)
        total_edges += len(edges)
        cycles += [(crate, source, target) for source, target in on_cycles(edges)]
    print(f"{total_modules} modules, {total_edges} use edges, {len(cycles)} on cycles")
    for crate, source, target in cycles:
        print(f"  {crate}::{'::'.join(source)} uses {crate}::{'::'.join(target)}, which leads back to it")
    sys.exit(1 if cycles else 0)


if __name__ == "__main__":
    main()
