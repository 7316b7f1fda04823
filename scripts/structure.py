#!/usr/bin/env python3
"""structure.py - hold the library's shape (DESIGN.md A.2, issue 14).

  structure.py --objects OBJ... [--sources SRC...] [--max-lines N]

--objects: the library's object files.  From their symbols (nm), which file
defines what every other file uses; fails when the files use each other in
a circle (a strongly connected group of more than one file), printing the
symbols that make it.  The graph itself is printed, one line a file.

--sources: C files whose functions may not be longer than --max-lines
(default 150) lines, signature to closing brace; fails naming each one.

Exit 0 when all holds, 1 when not, 2 on bad use.
"""
import collections
import os
import re
import subprocess
import sys


def symbol_graph(objs):
    defs, uses = {}, collections.defaultdict(set)
    for o in objs:
        name = os.path.basename(o)
        name = name[:name.index('.')] if '.' in name else name
        out = subprocess.run(['nm', o], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            p = line.split()
            if len(p) == 3 and p[1] in 'TDBRCV':
                defs[p[2]] = name
            elif len(p) == 2 and p[0] == 'U':
                uses[name].add(p[1])
    graph, why = collections.defaultdict(set), collections.defaultdict(set)
    for f, syms in uses.items():
        for s in syms:
            g = defs.get(s)
            if g and g != f:
                graph[f].add(g)
                why[(f, g)].add(s)
    return graph, why


def circles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(list(graph)):
        if v not in index:
            visit(v)
    return out


FUNC_START = re.compile(r'^[A-Za-z_][^;=]*\)\s*$|^[A-Za-z_][^;=]*\)\s*\{$')


def long_functions(path, limit):
    """(name, first line, lines) of functions over limit lines: a function
    starts at a line in column 0 that holds its name and '(' and ends at the
    '}' in column 0 that closes it."""
    lines = open(path, encoding='utf-8', errors='replace').read().split('\n')
    found, i = [], 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r'^(?:[A-Za-z_][\w\s\*]*?[\s\*])?([A-Za-z_]\w*)\(', line)
        if m and not line.startswith(('#', 'typedef', 'struct ', 'enum ',
                                      'union ')) and not line.rstrip().endswith(';'):
            j = i
            while j < len(lines) and '{' not in lines[j] and \
                    not lines[j].rstrip().endswith(';'):
                j += 1
            if j < len(lines) and lines[j].startswith('{') or \
                    (j < len(lines) and lines[j].rstrip().endswith('{')
                     and not lines[j].rstrip().endswith(';')):
                k = j + 1
                while k < len(lines) and not lines[k].startswith('}'):
                    k += 1
                n = k - i + 1
                if n > limit:
                    found.append((m.group(1), i + 1, n))
                i = k + 1
                continue
        i += 1
    return found


def main(argv):
    objs, srcs, limit, mode = [], [], 150, None
    it = iter(argv)
    for a in it:
        if a == '--objects':
            mode = objs
        elif a == '--sources':
            mode = srcs
        elif a == '--max-lines':
            limit = int(next(it))
        elif mode is not None:
            mode.append(a)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    bad = False
    if objs:
        graph, why = symbol_graph(objs)
        for f in sorted(graph):
            print('%-10s -> %s' % (f, ' '.join(sorted(graph[f]))))
        for c in circles(graph):
            bad = True
            print('circle: ' + ' '.join(c))
            for a in c:
                for b in c:
                    if b in graph[a]:
                        print('  %s -> %s: %s' % (a, b,
                                                  ' '.join(sorted(why[(a, b)]))))
        if not bad:
            print('no circle among %d files' % len(objs))
    for s in srcs:
        for name, line, n in long_functions(s, limit):
            bad = True
            print('%s:%d: %s is %d lines (at most %d)' % (s, line, name, n,
                                                         limit))
    if srcs and not bad:
        print('no function over %d lines in %d files' % (limit, len(srcs)))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
