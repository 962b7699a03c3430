#!/usr/bin/env python3
"""Checks the crate's layering: no import cycles between files, no imports up the layer list.

Builds a file-level import graph from src/**/*.rs text (no cargo); nodes are module paths
(lib.rs is `crate`, detect/mod.rs is `detect`, detect/tls.rs is `detect::tls`). Edges: `crate::`,
`super::`, `self::` paths in `use` trees and code, `sidewire::` in main.rs, and names brought in
by `use`/`mod x;`, each to the deepest file prefixing it. Comments, strings and #[cfg(test)]
tests modules are ignored. Exit 1 (problems on stderr, then a summary) on any cycle or any import
of a module in the same or a higher layer of the `//! # Layers` list in src/lib.rs; else 0.
Usage: scripts/check-layers.py [--graph (print edges a -> b)] [--src DIR (default: ../src)]
"""
import argparse
import re
import sys
from pathlib import Path

RAW_START = re.compile(r'[bc]?r(#*)"')
CHAR_LIT = re.compile(r"'(?:[^'\\\n]|\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]{1,6}\}|.))'")
TEST_MOD = re.compile(r'^[ \t]*#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*'
                      r'(?:pub(?:\([^)]*\))?\s+)?mod\s+tests\s*([{;])', re.M)
TOKEN = re.compile(r'\s*(::|[{},*]|\$crate|[A-Za-z_]\w*)')
PATH_START = re.compile(r'(?<![\w:$.])(?:::\s*)?(\$crate|[A-Za-z_]\w*)\s*::')
USE = re.compile(r'(?<![\w:$.])use\s+(?:::\s*)?')
MOD_DECL = re.compile(r'(?<![\w:$.])mod\s+([A-Za-z_]\w*)\s*;')
VISIBILITY_PATH = re.compile(r'\bpub\s*\(\s*in\s[^)]*\)')  # pub(in crate::x) is no import


def strip_comments_and_strings(text):
    """Blank out comments and string/char literals, keeping offsets and line numbers."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        after_ident = i > 0 and (text[i - 1].isalnum() or text[i - 1] == '_')
        if text.startswith('//', i):
            j = text.find('\n', i)
            j = n if j < 0 else j
        elif text.startswith('/*', i):
            depth, j = 1, i + 2
            while j < n and depth:
                step = text[j:j + 2]
                depth += 1 if step == '/*' else -1 if step == '*/' else 0
                j += 2 if step in ('/*', '*/') else 1
        elif not after_ident and (m := RAW_START.match(text, i)):
            end = text.find('"' + m.group(1), m.end())
            j = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == '\\' else 1
            j += 1
        elif c == "'" and (m := CHAR_LIT.match(text, i)):
            j = m.end()
        else:
            out.append(c)
            i += 1
            continue
        out.append(re.sub(r'[^\n]', ' ', text[i:j]))
        i = j
    return ''.join(out)


def module_of(rel):
    """Module path (tuple) of a file path relative to src/: lib.rs is (), a/mod.rs is ('a',)."""
    parts = list(rel.with_suffix('').parts)
    if parts == ['lib']:
        return ()
    return tuple(parts[:-1] if parts[-1] == 'mod' else parts)


def name_of(mod):
    """Display name of a module path: `crate` for the root, else `a::b`."""
    return '::'.join(mod) or 'crate'


def load_tree(src):
    """Map module path -> (relative file path, cleaned text) for every .rs file under src."""
    files, test_children = {}, set()
    for path in sorted(src.rglob('*.rs')):
        rel = path.relative_to(src)
        mod = module_of(rel)
        text = strip_comments_and_strings(path.read_text(encoding='utf-8'))
        text = VISIBILITY_PATH.sub(lambda m: ' ' * len(m.group()), text)
        for m in TEST_MOD.finditer(text):
            if m.group(1) == ';':
                test_children.add(mod + ('tests',))
            else:
                text = text[:m.start()]
                break
        files[mod] = (rel, text)
    for mod in test_children:
        files.pop(mod, None)
    return files


def parse_tree(text, pos):
    """Parse a path or use-tree at pos; return ([(segments, alias)], end position)."""
    m = TOKEN.match(text, pos)
    if not m or m.group(1) in ('::', '}', ','):
        return [], pos
    tok, pos = m.group(1), m.end()
    if tok == '*':
        return [(['*'], None)], pos
    if tok == '{':
        out = []
        while (m := TOKEN.match(text, pos)) and m.group(1) != '}':
            sub, end = parse_tree(text, pos)
            if m.group(1) == ',':
                end = m.end()
            elif end == pos:
                return out, pos
            out += sub
            pos = end
        return out, (m.end() if m else pos)
    m = TOKEN.match(text, pos)
    if m and m.group(1) == '::':
        sub, pos = parse_tree(text, m.end())
        return [([tok] + segs, alias) for segs, alias in sub] or [([tok], None)], pos
    alias = None
    if m and m.group(1) == 'as' and (a := TOKEN.match(text, m.end())):
        alias, pos = a.group(1), a.end()
    return [([tok], alias)], pos


def absolute(segs, mod, bindings):
    """Resolve path segments used in module `mod` to an absolute module path, or None."""
    first, rest = segs[0], list(segs[1:])
    if mod == ('main',):  # the binary: `sidewire::` is the library, `crate::` is main itself
        base = () if first == 'sidewire' else bindings.get(first)
    elif first in ('crate', '$crate'):
        base = ()
    elif first in ('super', 'self'):
        base = mod[:-1] if first == 'super' else mod
    else:
        base = bindings.get(first)
    if base is None:
        return None
    while rest and rest[0] in ('super', 'self'):
        base = base[:-1] if rest.pop(0) == 'super' else base
    return tuple(base) + tuple(s for s in rest if s not in ('self', '*'))


def file_edges(mod, text, nodes):
    """Return {target module: first line} for the crate paths in one file's cleaned text."""
    bindings = {name: mod + (name,) for name in MOD_DECL.findall(text)}
    for m in USE.finditer(text):
        for segs, alias in parse_tree(text, m.end())[0]:
            path = absolute(segs, mod, bindings)
            name = alias or (segs[-2] if segs[-1] == 'self' and len(segs) > 1 else segs[-1])
            if path is not None and name not in ('*', '_', 'self', 'super', 'crate'):
                bindings[name] = path
    edges, done = {}, 0
    for m in PATH_START.finditer(text):
        if m.start() < done:
            continue
        trees, done = parse_tree(text, m.start(1))
        for segs, _ in trees:
            path = absolute(segs, mod, bindings)
            if path is None:
                continue
            target = next((path[:k] for k in range(len(path), 0, -1) if path[:k] in nodes), ())
            if target != mod:
                edges.setdefault(target, text.count('\n', 0, m.start()) + 1)
    return edges


def read_layers(lib_text):
    """Return ({module: layer number}, [problems]) from the `//! # Layers` section of lib.rs."""
    lines = lib_text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if re.match(r'\s*//!\s*#+\s*Layers\s*$', line)), None)
    if start is None:
        return None, ['src/lib.rs: no `//! # Layers` section in the crate docs']
    layers, problems, last = {}, [], 0
    for no, line in enumerate(lines[start + 1:], start + 2):
        if not line.lstrip().startswith('//!') or re.match(r'\s*//!\s*#', line):
            break
        m = re.match(r'\s*//!\s*(\d+)\.\s+(.*)', line)
        if not m:
            continue
        n, names = int(m.group(1)), re.match(r'(`\w+`(?:\s*,\s*`\w+`)*)', m.group(2))
        if not names:
            problems.append(f'src/lib.rs:{no}: layer {n} does not start with a `module` name')
            continue
        if n <= last:
            problems.append(f'src/lib.rs:{no}: layer {n} comes after layer {last}')
        last = n
        for name in re.findall(r'`(\w+)`', names.group(1)):
            if name in layers:
                problems.append(f'src/lib.rs:{no}: `{name}` is listed twice')
            layers.setdefault(name, n)
    return layers, problems


def strongly_connected(graph):
    """Tarjan's algorithm: the strongly connected components of {node: {target: line}}."""
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def shortest_cycle(start, comp, graph):
    """A shortest cycle through `start` inside one component, as a list of modules (BFS)."""
    prev, queue = {}, [start]
    for v in queue:
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1] + [start]
            if w in comp and w not in prev:
                prev[w] = v
                queue.append(w)
    return [start]


def layering_problems(files, graph, layers, where):
    """Return (problems with the Layers list, same-layer or upward imports) as message lists."""
    present = {mod[0]: mod for mod in sorted(files, reverse=True) if mod}
    listing = [f'{where(present[top], 1)}: module `{top}` is not in the Layers list'
               for top in sorted(set(present) - set(layers))]
    listing += [f'src/lib.rs: Layers lists `{top}`, which has no file under src/'
                for top in sorted(set(layers) - set(present))]
    imports = []
    for a in sorted(graph):
        for b, line in sorted(graph[a].items()):
            if not a or not b or a[0] == b[0] or a[0] not in layers or b[0] not in layers:
                continue  # the root, one top-level module, or an unlisted one (reported above)
            la, lb = layers[a[0]], layers[b[0]]
            if la >= lb:
                imports.append(f'{where(a, line)}: {"same-layer" if la == lb else "upward"} '
                               f'import {name_of(a)} -> {name_of(b)} (`{a[0]}` is layer {la}, '
                               f'`{b[0]}` is layer {lb})')
    return listing, imports


def check(src, show_graph):
    """Run every check on the tree at src; print problems and a summary; return the exit code."""
    files = load_tree(src)
    graph = {mod: file_edges(mod, text, files) for mod, (_, text) in files.items()}
    if show_graph:
        for a in sorted(graph, key=name_of):
            for b in sorted(graph[a], key=name_of):
                print(f'{name_of(a)} -> {name_of(b)}')
    layers, problems, imports = None, [f'{src}/lib.rs: missing'], []
    if () in files:
        layers, problems = read_layers((src / 'lib.rs').read_text(encoding='utf-8'))
    if layers is not None:
        where = lambda mod, line: f'{src.name}/{files[mod][0].as_posix()}:{line}'
        listing, imports = layering_problems(files, graph, layers, where)
        problems += listing
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    cycle_lines = [f'cycle between {len(c)} files: {", ".join(map(name_of, c))} (e.g. '
                   f'{" -> ".join(map(name_of, shortest_cycle(c[0], set(c), graph)))})'
                   for c in cycles]
    edges = sum(len(targets) for targets in graph.values())
    counts = (f'{len(files)} files, {edges} edges, {len(cycles)} cycles, '
              f'{len(imports)} upward imports')
    if not (problems or imports or cycles):
        print(f'layers ok: {counts}')
        return 0
    print('\n'.join(problems + imports + cycle_lines), file=sys.stderr)
    other = f', {len(problems)} other problems' if problems else ''
    print(f'layers FAILED: {counts}{other}', file=sys.stderr)
    return 1


def main():
    """Parse the command line and run the check."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--src', type=Path, default=Path(__file__).resolve().parent.parent / 'src',
                        help='the crate source folder (default: %(default)s)')
    parser.add_argument('--graph', action='store_true', help='print the file-level edges a -> b')
    args = parser.parse_args()
    if not args.src.is_dir():
        parser.error(f'--src {args.src}: not a directory')
    return check(args.src, args.graph)


if __name__ == '__main__':
    sys.exit(main())
