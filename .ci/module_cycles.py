#!/usr/bin/env python3
"""Fails if two modules of src/ import each other (directly, file by file, or as top-level
modules): the crate's modules read in one direction. Test modules (`#[cfg(test)] mod tests`)
are not counted."""
import re,os,collections,sys
mods={}
for root,_,files in os.walk('src'):
    for f in files:
        if not f.endswith('.rs'): continue
        p=os.path.join(root,f); parts=p[4:-3].split('/')
        if parts[-1] in ('mod','lib'): parts=parts[:-1]
        mods['::'.join(parts)]=p
def resolve(m,p,path):
    parts=path.split('::')
    for i in range(len(parts),0,-1):
        c='::'.join(parts[:i])
        if c in mods: return c
edges=collections.defaultdict(set)
for m,p in mods.items():
    s=open(p).read()
    k=s.find('#[cfg(test)]\nmod tests')
    if k>=0: s=s[:k]
    s=re.sub(r'//.*','',s)
    isdir=p.endswith('mod.rs') or p.endswith('lib.rs')
    parent=m if isdir else '::'.join(m.split('::')[:-1])
    refs=[('',x) for x in re.findall(r'crate::((?:[a-z_]+::)*[a-z_]+)',s)]
    refs+=[(parent,x) for x in re.findall(r'\bsuper::((?:[a-z_]+::)*[a-z_]+)',s)]
    # use super::{a::X, b::Y}
    for grp in re.findall(r'use super::\{([^;]*)\};',s,re.S):
        for x in re.findall(r'(?:^|[,{\s])([a-z_]+)::',grp): refs.append((parent,x))
    for grp in re.findall(r'use crate::\{([^;]*)\};',s,re.S):
        for x in re.findall(r'(?:^|[,{\s])([a-z_]+)::',grp): refs.append(('',x))
        for x in re.findall(r'(?:^|[,{\s])([a-z_]+)\s*[,}]',grp): refs.append(('',x))
    for base,x in refs:
        full=(base+'::'+x) if base else x
        c=resolve(m,p,full)
        if c and c!=m and not m.startswith(c+'::') and not c.startswith(m+'::') and c!='':
            edges[m].add(c)
bad=0
for a in sorted(edges):
    for b in sorted(edges[a]):
        if a in edges.get(b,()) and a<b: print('cycle:',a,'<->',b); bad+=1
# top-level
top=collections.defaultdict(set)
for a,bs in edges.items():
    for b in bs:
        ta,tb=a.split('::')[0],b.split('::')[0]
        if ta!=tb: top[ta].add(tb)
for a in sorted(top):
    for b in sorted(top[a]):
        if a in top[b] and a<b: print('top-level cycle:',a,'<->',b); bad+=1
print('modules',len(mods),'edges',sum(map(len,edges.values())),'cycles',bad)
sys.exit(1 if bad else 0)
