"""Checks that `perimeter inventory --verify` and `dpkg --verify` reached the
same verdicts: the same (path, missing|modified, conffile?) set. Exits 1 with
the differences otherwise."""

import json
import sys

perimeter = json.load(open(sys.argv[1]))
ours = set()
for f in perimeter["conffiles"]:
    ours.add((f["path"], f["change"] if f["change"] == "missing" else "modified", True))
for f in perimeter["modified_files"] or []:
    ours.add((f["path"], f["change"] if f["change"] == "missing" else "modified", False))

theirs = set()
for line in open(sys.argv[2]):
    words = line.split()
    if not words:
        continue
    conffile = len(words) == 3 and words[1] == "c"
    theirs.add((words[-1], "missing" if words[0] == "missing" else "modified", conffile))

if ours != theirs:
    for item in sorted(ours - theirs)[:20]:
        print("only perimeter:", item)
    for item in sorted(theirs - ours)[:20]:
        print("only dpkg:", item)
    sys.exit(f"compare.py: verdicts differ ({len(ours)} perimeter, {len(theirs)} dpkg)")
stats = perimeter["stats"]
print(f"== same verdicts: {len(ours)} changed or missing paths; perimeter checked "
      f"{stats['files_verified']} files and {stats['conffiles_checked']} conffiles, "
      f"{stats['bytes_hashed'] / 1e9:.2f} GB, backend {stats['checksum_backend']}")
