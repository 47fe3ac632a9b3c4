# The biggest heap holders at massif's peak snapshot, each as the first perimeter
# frames under it (bench/agent-cost.sh with BENCH_MASSIF=1).
# Usage: massif_top.py MASSIF_OUT [peak]
import re, sys
lines = open(sys.argv[1]).read().splitlines()
# find peak snapshot heap tree
snaps = []; i = 0
while i < len(lines):
    if lines[i].startswith("snapshot="):
        j = i; info = {}
        while j < len(lines) and not lines[j].startswith("heap_tree="):
            k, _, v = lines[j].partition("="); info[k] = v; j += 1
        kind = lines[j].split("=")[1]
        snaps.append((int(info["mem_heap_B"]), kind, j))
        i = j + 1
    else:
        i += 1
want = sys.argv[2] if len(sys.argv) > 2 else "peak"
if want == "peak":
    idx = [s for s in snaps if s[1] == "peak"][0]
else:
    idx = max((s for s in snaps if s[1] == "detailed"), key=lambda s: s[0]) if want == "max" else [s for s in snaps if s[1]=="detailed"][-1]
start = idx[2] + 1
# parse tree: lines "n<k>: <bytes> <desc>", indentation by spaces
nodes = []
for l in lines[start:]:
    m = re.match(r"( *)n(\d+): (\d+) (.*)", l)
    if not m: break
    nodes.append((len(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)))
print("snapshot heap", idx[0], idx[1])
# build tree
def children(pos):
    depth = nodes[pos][0]; out = []; p = pos + 1
    while p < len(nodes) and nodes[p][0] > depth:
        if nodes[p][0] == depth + 1: out.append(p)
        p += 1
    return out
def label(desc):
    m = re.search(r"\((crates/[^)]*)\)", desc) or re.search(r"\(([^)]*\.rs:\d+)\)", desc)
    fn = re.search(r": (.*?) \(", desc)
    return (fn.group(1) if fn else desc)[:70] + " @ " + (m.group(1) if m else "?")
for c in children(0):
    path = []; p = c
    while True:
        d = nodes[p][3]
        fn = re.search(r"0x[0-9A-F]+: (.*) \(([^()]*:\d+)\)$", d)
        if fn and re.match(r"<?perimeter_", fn.group(1)):
            name = re.sub(r"<.*>", "", fn.group(1))[:60] + " (" + fn.group(2) + ")"
            if not path or path[-1] != name: path.append(name)
            if len(path) >= 3: break
        ch = children(p)
        if not ch: break
        p = max(ch, key=lambda q: nodes[q][2])
    print(f"{nodes[c][2]/1e6:6.2f} MB  " + " <- ".join(path))
