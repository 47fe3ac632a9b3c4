"""Checks that `perimeter inventory --verify` and `dpkg --verify` reached the
same verdicts: the same (path, missing|modified, conffile?) set. Exits 1 with
the differences otherwise. With a third argument (the PERIMETER_MD5 the run
was given), also checks that the run hashed with that backend, and says which
backend ran and what the start-up measurement found."""

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
backend = stats["checksum_backend"]
forced = sys.argv[3] if len(sys.argv) > 3 else "auto"
if forced != "auto" and not backend.startswith(forced):
    sys.exit(f"compare.py: PERIMETER_MD5={forced} but the run hashed with {backend}")
measured = ", ".join(f"{name} {mb_s / 1000:.1f} GB/s" for name, mb_s in stats.get("checksum_calibration", []))
print(f"same verdicts: {len(ours)} changed or missing paths; perimeter checked "
      f"{stats['files_verified']} files and {stats['conffiles_checked']} conffiles, "
      f"{stats['bytes_hashed'] / 1e9:.2f} GB; hashing path {backend}"
      + (f" (measured at start: {measured})" if measured else " (forced)" if forced != "auto" else ""))
