package kube

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// An archive is a gzipped tar of one directory a worker needs (its
// environment's venv, the runner's runtime, the SDK), named by the sha256
// of its bytes. Pods fetch archives from the server's archive endpoint,
// check the hash, and unpack each once per node into the node's cache, where
// the worker container mounts it read-only.

// archivePath is where the endpoint serves the archive of a digest.
const archivePath = "/v1/archives/"

// Archives makes archives on the server and keeps them under one directory.
type Archives struct {
	dir string

	mu    sync.Mutex
	byKey map[string]string // what was packed (a key the caller names) -> digest
	packs map[string]*sync.Once
}

// NewArchives keeps archives under dir.
func NewArchives(dir string) (*Archives, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrArchive, err)
	}
	return &Archives{dir: dir, byKey: make(map[string]string), packs: make(map[string]*sync.Once)}, nil
}

// venvRewrite describes how a venv built on the server is made to run on
// the worker image's interpreter: its bin directory is replaced by links to
// the image's python, and pyvenv.cfg names the image's prefix. Everything
// else (site-packages, compiled extensions for the same CPython minor
// version) is the same bytes.
type venvRewrite struct {
	python string // major.minor
}

// Pack archives dir once per key (environments are immutable once built, so
// their key names their content) and returns its digest, "sha256:<hex>".
// With venv set, dir is a venv rewritten for the image's interpreter.
func (a *Archives) Pack(key, dir string, venv *venvRewrite) (string, error) {
	a.mu.Lock()
	once, ok := a.packs[key]
	if !ok {
		once = new(sync.Once)
		a.packs[key] = once
	}
	a.mu.Unlock()
	var err error
	once.Do(func() {
		var digest string
		digest, err = a.pack(dir, venv)
		if err != nil {
			return
		}
		a.mu.Lock()
		a.byKey[key] = digest
		a.mu.Unlock()
	})
	a.mu.Lock()
	defer a.mu.Unlock()
	digest, ok := a.byKey[key]
	if !ok {
		delete(a.packs, key) // a failed pack is tried again by the next worker
		if err == nil {
			err = fmt.Errorf("%w: %s was not packed", ErrArchive, dir)
		}
		return "", err
	}
	return digest, nil
}

func (a *Archives) pack(dir string, venv *venvRewrite) (digest string, err error) {
	tmp, err := os.CreateTemp(a.dir, ".pack-*")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	zw, _ := gzip.NewWriterLevel(io.MultiWriter(tmp, h), gzip.BestSpeed)
	tw := tar.NewWriter(zw)
	if err := writeTree(tw, dir, venv); err != nil {
		return "", fmt.Errorf("%w: pack %s: %w", ErrArchive, dir, err)
	}
	if err := tw.Close(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrArchive, err)
	}
	if err := zw.Close(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrArchive, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("%w: %w", ErrArchive, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp.Name(), filepath.Join(a.dir, sum+".tar.gz")); err != nil {
		return "", fmt.Errorf("%w: %w", ErrArchive, err)
	}
	return "sha256:" + sum, nil
}

// fixedTime stamps what the rewrite adds, so that one venv always packs to
// the same bytes.
var fixedTime = time.Unix(0, 0)

// writeTree writes dir's regular files, directories and the symbolic links
// that stay inside it, in lexical order.
func writeTree(tw *tar.Writer, dir string, venv *venvRewrite) error {
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if venv != nil && (rel == "bin" || rel == "pyvenv.cfg") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		var link string
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
			target := path.Join(path.Dir(rel), filepath.ToSlash(link))
			if filepath.IsAbs(link) || target == ".." || strings.HasPrefix(target, "../") {
				return nil // points outside the tree: means nothing on a node
			}
		} else if !info.Mode().IsRegular() && !info.IsDir() {
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		hdr.Name, hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = rel, 0, 0, "", ""
		hdr.Mode &= 0o755
		if info.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil || venv == nil {
		return err
	}
	// The image's interpreter, as a venv of Debian's python (or any image
	// with /usr/bin/pythonX.Y) expects it.
	cfg := fmt.Sprintf("home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n", venv.python)
	if err := tw.WriteHeader(&tar.Header{Name: "pyvenv.cfg", Mode: 0o644, Size: int64(len(cfg)), ModTime: fixedTime, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.WriteString(tw, cfg); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/", Mode: 0o755, ModTime: fixedTime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	for _, name := range []string{"python", "python3", "python" + venv.python} {
		hdr := &tar.Header{Name: "bin/" + name, Linkname: "/usr/bin/python" + venv.python, Mode: 0o777, ModTime: fixedTime, Typeflag: tar.TypeSymlink}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	return nil
}

// digestHex returns the hex of a "sha256:<hex>" digest, or an error.
func digestHex(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != sha256.Size*2 {
		return "", fmt.Errorf("%w: digest %q: want sha256:<64 hex digits>", ErrArchive, digest)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("%w: digest %q: %w", ErrArchive, digest, err)
	}
	return h, nil
}

// ArchiveServer serves archives to pods over HTTP. A pod presents the
// credential it was granted with its archives, and gets those alone: an
// environment's digest does not open it to other accounts' pods.
type ArchiveServer struct {
	archives *Archives

	mu     sync.Mutex
	grants map[[sha256.Size]byte]map[string]bool
}

// NewArchiveServer serves the archives of a.
func NewArchiveServer(a *Archives) *ArchiveServer {
	return &ArchiveServer{archives: a, grants: make(map[[sha256.Size]byte]map[string]bool)}
}

// Grant returns a new credential that fetches digests, and the function
// that revokes it.
func (s *ArchiveServer) Grant(digests []string) (credential string, revoke func()) {
	b := make([]byte, 32)
	rand.Read(b)
	credential = hex.EncodeToString(b)
	key := sha256.Sum256([]byte(credential))
	set := make(map[string]bool, len(digests))
	for _, d := range digests {
		set[d] = true
	}
	s.mu.Lock()
	s.grants[key] = set
	s.mu.Unlock()
	return credential, func() {
		s.mu.Lock()
		delete(s.grants, key)
		s.mu.Unlock()
	}
}

// ServeHTTP answers GET /v1/archives/<hex> for a granted credential.
func (s *ArchiveServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	h, ok := strings.CutPrefix(r.URL.Path, archivePath)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if _, err := digestHex("sha256:" + h); err != nil {
		http.Error(w, "not an archive digest", http.StatusBadRequest)
		return
	}
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	allowed := ok && s.grants[sha256.Sum256([]byte(cred))]["sha256:"+h]
	s.mu.Unlock()
	if !allowed {
		http.Error(w, "this credential does not grant that archive", http.StatusForbidden)
		return
	}
	http.ServeFile(w, r, filepath.Join(s.archives.dir, h+".tar.gz"))
}

// FetchOptions configure Fetch, which the worker pod's init container runs.
type FetchOptions struct {
	// URL is the server's archive endpoint ("http://10.0.0.1:28657").
	URL string
	// Credential is what the server granted this pod.
	Credential string
	// CacheDir is the node's archive cache: each archive unpacks to
	// CacheDir/<hex>, once per node.
	CacheDir string
	// Digests are the archives to make present.
	Digests []string
	// Client, if set, makes the requests.
	Client *http.Client
	// Logf, if set, reports what was fetched and what the cache had.
	Logf func(format string, args ...any)
}

// Fetch makes each archive present in the cache: already unpacked (by an
// earlier pod on this node), or downloaded, verified against its digest and
// unpacked. Pods starting at once on one node fetch each archive once: a
// lock file per archive serialises them.
func Fetch(ctx context.Context, opts FetchOptions) error {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 10 * time.Minute}
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(filepath.Join(opts.CacheDir, ".locks"), 0o755); err != nil {
		return fmt.Errorf("%w: cache: %w", ErrArchive, err)
	}
	for _, d := range opts.Digests {
		if err := fetchOne(ctx, opts, d); err != nil {
			return err
		}
	}
	return nil
}

func fetchOne(ctx context.Context, opts FetchOptions, digest string) error {
	h, err := digestHex(digest)
	if err != nil {
		return err
	}
	final := filepath.Join(opts.CacheDir, h)
	if _, err := os.Stat(final); err == nil {
		opts.Logf("archive %s: cached on this node", digest)
		return nil
	}
	lock, err := os.OpenFile(filepath.Join(opts.CacheDir, ".locks", h), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("%w: lock %s: %w", ErrArchive, digest, err)
	}
	if _, err := os.Stat(final); err == nil {
		opts.Logf("archive %s: unpacked by another pod on this node", digest)
		return nil
	}
	start := time.Now()
	tmp, err := os.MkdirTemp(opts.CacheDir, ".unpack-")
	if err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	defer os.RemoveAll(tmp)
	download := filepath.Join(tmp, "archive.tar.gz")
	if err := download1(ctx, opts, h, download); err != nil {
		return err
	}
	tree := filepath.Join(tmp, "tree")
	if err := unpack(download, tree); err != nil {
		return fmt.Errorf("%w: unpack %s: %w", ErrArchive, digest, err)
	}
	if err := os.Rename(tree, final); err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	opts.Logf("archive %s: fetched and unpacked in %s", digest, time.Since(start).Round(time.Millisecond))
	return nil
}

// download1 fetches one archive to path and checks its hash.
func download1(ctx context.Context, opts FetchOptions, h, dst string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(opts.URL, "/")+archivePath+h, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	req.Header.Set("Authorization", "Bearer "+opts.Credential)
	resp, err := opts.Client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: fetch sha256:%s: %w", ErrArchive, h, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%w: fetch sha256:%s: %s: %s", ErrArchive, h, resp.Status, strings.TrimSpace(string(msg)))
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrArchive, err)
	}
	sum := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, sum), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: fetch sha256:%s: %w", ErrArchive, h, err)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h {
		return fmt.Errorf("%w: fetched sha256:%s but its bytes hash to sha256:%s", ErrArchive, h, got)
	}
	return nil
}

// unpack extracts a verified archive into dir. The archive's hash matched
// what the server granted, so its bytes are the server's; paths are still
// kept inside dir.
func unpack(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean(hdr.Name)
		if name == "." {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q leaves the archive", hdr.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				return err
			}
		case tar.TypeReg:
			out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, fs.FileMode(hdr.Mode)&0o755|0o444)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			// Python checks cached bytecode against its source's mtime.
			if err := os.Chtimes(target, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: unsupported type %c", hdr.Name, hdr.Typeflag)
		}
	}
}
