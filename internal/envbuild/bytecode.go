package envbuild

import (
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Bytecode shared through the uv cache. uv installs a wheel by linking
// every file of its unpacked copy in the cache (archive-v0/<id>/) into the
// venv, whatever RECORD lists. So once a venv's bytecode is compiled, the
// compile step links each .pyc back beside its source in that copy, and
// the next venv that installs the same wheel gets the bytecode with the
// sources, already valid: a timestamp .pyc names its source's size and
// modification time, and a linked source is the very same file. A build
// whose every source has current bytecode runs no compiler at all.
//
// This writes only where phase 1's session may already write (the shared
// cache), only files that session's own compiler made from files the
// cache holds; the source phase, which runs package code, never sees the
// cache. A cache copied rather than linked (another filesystem) shares
// nothing and compiles every time, as before.

// uvArchiveDir is where, in uv's cache, unpacked wheels lie.
const uvArchiveDir = "archive-v0"

// compileScript compiles its targets as `python -m compileall -q -j JOBS`
// would, then links the bytecode of every installed file that is the
// cache's own (same inode) back beside it in the cache. Arguments: JOBS,
// the cache's archive directory, site-packages, and the targets.
const compileScript = `import compileall, csv, os, sys
from importlib.util import cache_from_source

jobs, archives, site, *targets = sys.argv[1:]
ok = True
for t in targets:
    if os.path.isdir(t) and not os.path.islink(t):
        ok &= bool(compileall.compile_dir(t, quiet=1, workers=int(jobs)))
    elif t.endswith(".py"):
        ok &= bool(compileall.compile_file(t, quiet=1))

def same(a, b):
    try:
        x, y = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)

try:
    unpacked = os.listdir(archives)
except OSError:
    unpacked = []
for dist in os.listdir(site):
    if not dist.endswith(".dist-info") or dist.startswith("pip-"):
        continue
    here = os.path.join(site, dist)
    root = next((os.path.join(archives, u) for u in unpacked
                 if same(os.path.join(here, "METADATA"), os.path.join(archives, u, dist, "METADATA"))), None)
    if root is None:
        continue
    try:
        with open(os.path.join(here, "RECORD"), newline="", encoding="utf-8") as f:
            files = [row[0] for row in csv.reader(f) if row]
    except (OSError, csv.Error, UnicodeError):
        continue
    for rel in files:
        rel = os.path.normpath(rel)
        if not rel.endswith(".py") or os.path.isabs(rel) or rel.startswith(".."):
            continue
        src = os.path.join(site, rel)
        if not same(src, os.path.join(root, rel)):
            continue
        pyc = cache_from_source(src)
        dest = os.path.join(root, os.path.relpath(pyc, site))
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.link(pyc, dest)
        except OSError:
            pass  # not compiled, already there, or another filesystem
sys.exit(0 if ok else 1)
`

// cacheTag is CPython's bytecode file tag for version "3.11.7": "cpython-311".
func cacheTag(version string) string {
	parts := strings.SplitN(version, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	return "cpython-" + parts[0] + parts[1]
}

// bytecodeCurrent reports whether the source file py has bytecode that
// its interpreter (tag) will use as it is: a timestamp .pyc in
// __pycache__ naming the source's modification time and size.
func bytecodeCurrent(py, tag string) bool {
	src, err := os.Stat(py)
	if err != nil || tag == "" {
		return false
	}
	dir, base := filepath.Split(py)
	f, err := os.Open(filepath.Join(dir, "__pycache__", strings.TrimSuffix(base, ".py")+"."+tag+".pyc"))
	if err != nil {
		return false
	}
	defer f.Close()
	// PEP 552: magic, flags (0: checked by timestamp), mtime, size.
	var h [16]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(h[4:8]) == 0 &&
		binary.LittleEndian.Uint32(h[8:12]) == uint32(src.ModTime().Unix()) &&
		binary.LittleEndian.Uint32(h[12:16]) == uint32(src.Size())
}
