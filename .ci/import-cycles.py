#!/usr/bin/env python3
# Fails when a module of src/ imports (by `use` or by a crate::/super:: path) a module that
# imports it back, directly or around a longer cycle. Run by .ci/run; usage: import-cycles.py REPO
# Module import graph of src/: a node per module file; an edge A -> B when A's `use` names B
# (crate::x::y resolves to the deepest existing module). Reports every pair that imports each
# other and every longer cycle, at the level of top-level modules and of submodules.
import os, re, sys, itertools
root = sys.argv[1] + '/src'
mods = {}
for d, _, fs in os.walk(root):
    if '/ui' in d: continue
    for f in fs:
        if not f.endswith('.rs'): continue
        path = os.path.join(d, f)
        rel = os.path.relpath(path, root)[:-3].split('/')
        if rel[-1] in ('mod', 'lib', 'main'): rel = rel[:-1]
        mods[tuple(rel)] = path
def resolve(cur, parts):
    if parts[0] == 'crate': base = []; parts = parts[1:]
    elif parts[0] == 'super':
        base = list(cur[:-1])
        while parts and parts[0] == 'super': parts = parts[1:]; base = base[:-1] if parts and parts[0]=='super' else base
    elif parts[0] == 'self': base = list(cur); parts = parts[1:]
    else: return None
    best = None
    for i in range(len(parts)+1):
        cand = tuple(base + parts[:i])
        if cand in mods: best = cand
    return best
edges = {}
for m, path in mods.items():
    text = open(path).read()
    text = re.split(r'#\[cfg\(test\)\]\s*\n(?:\s*#\[[^\n]*\]\s*\n)*\s*mod tests', text)[0]
    if m[-1:] == ('tests',): continue
    # Paths used in code (crate::x::f(), super::y::T) count like imports.
    code = re.sub(r'//[^\n]*', '', text)
    for path in re.findall(r'\b((?:crate|super)(?:::\w+)+)', code):
        t = resolve(m, path.split('::'))
        if t is not None and t != m and not (len(t) < len(m) and m[:len(t)] == t):
            edges.setdefault(m, set()).add(t)
    for u in re.findall(r'^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+([^;]+);', text, re.M):
        u = re.sub(r'\s+', '', u)
        heads = [u]
        mm = re.match(r'(.*)::\{(.*)\}$', u)
        if mm:
            heads = [mm.group(1) + '::' + x for x in re.split(r',(?![^{]*\})', mm.group(2)) if x]
        for h in heads:
            parts = [p for p in h.split('::') if p]
            t = resolve(m, parts)
            if t is not None and t != m and not (len(t) < len(m) and m[:len(t)] == t):
                edges.setdefault(m, set()).add(t)
def top(m): return m[:1]
bad = 0
for level, key in (('top-level', top), ('module', lambda m: m)):
    g = {}
    for a, bs in edges.items():
        for b in bs:
            ka, kb = key(a), key(b)
            if ka != kb: g.setdefault(ka, set()).add(kb)
    # cycles via DFS
    seen, stack, onstack = set(), [], set()
    cycles = []
    def dfs(v):
        seen.add(v); stack.append(v); onstack.add(v)
        for w in g.get(v, ()):
            if w in onstack: cycles.append(stack[stack.index(w):] + [w])
            elif w not in seen: dfs(w)
        stack.pop(); onstack.discard(v)
    for v in list(g): 
        if v not in seen: dfs(v)
    print(f"{level}: {len(g)} modules with imports, {len(cycles)} cycles")
    for c in cycles: print("   ", " -> ".join("::".join(x) or "crate" for x in c)); bad += 1
sys.exit(1 if bad else 0)
