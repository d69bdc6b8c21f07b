package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/storage"
)

// stagingDir is where storage stages uploads inside an account directory.
const stagingDir = ".atoll-staging"

type node struct {
	content string
	isDir   bool
	link    string
	mode    fs.FileMode
}

// tree describes a directory tree by slash-separated relative path.
type tree map[string]node

func (tr tree) entries() []storage.Entry {
	var out []storage.Entry
	for p, n := range tr {
		e := storage.Entry{Path: p, Mode: n.mode}
		switch {
		case n.isDir:
			e.Kind = storage.KindDir
			if e.Mode == 0 {
				e.Mode = 0o755
			}
		case n.link != "":
			e.Kind, e.LinkTarget = storage.KindSymlink, n.link
		default:
			e.Kind, e.Size = storage.KindFile, int64(len(n.content))
			if e.Mode == 0 {
				e.Mode = 0o644
			}
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

var cmpNode = cmp.AllowUnexported(node{})

// readTree describes what is stored under dir, the way tree does.
func readTree(t *testing.T, dir string) tree {
	t.Helper()
	out := tree{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == stagingDir {
			return fs.SkipDir
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			out[rel] = node{isDir: true, mode: fi.Mode().Perm()}
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = node{link: target}
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = node{content: string(data), mode: fi.Mode().Perm()}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// testStorage is a Storage service's store and the data directory under it.
type testStorage struct{ dataDir string }

func accountDir(t *testing.T, s testStorage, account string) string {
	t.Helper()
	dir, err := storage.AccountDir(s.dataDir, account)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// testAccountKey stands in for authentication: the test interceptors make
// its value the principal's account, as auth's interceptors do from a key.
const testAccountKey = "x-test-account"

func principal(ctx context.Context) context.Context {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(testAccountKey)) == 1 {
		return auth.NewContext(ctx, auth.Principal{Account: md.Get(testAccountKey)[0], KeyID: "test"})
	}
	return ctx
}

type principalStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s principalStream) Context() context.Context { return s.ctx }

// startService serves a Storage service on an in-memory listener.
func startService(t *testing.T, opts storage.Options) (atollv1.StorageClient, testStorage) {
	t.Helper()
	opts.DataDir, opts.NoSync = t.TempDir(), true
	store, err := storage.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return h(principal(ctx), req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, principalStream{ss, principal(ss.Context())})
		}),
	)
	NewStorage(store, nil).Register(gs)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return atollv1.NewStorageClient(conn), testStorage{dataDir: opts.DataDir}
}

func asAccount(account string) context.Context {
	if account == "" {
		return context.Background()
	}
	return metadata.AppendToOutgoingContext(context.Background(), testAccountKey, account)
}

func protoEntries(tr tree) []*atollv1.SyncEntry {
	var out []*atollv1.SyncEntry
	for _, e := range tr.entries() {
		kind := map[storage.Kind]atollv1.EntryKind{
			storage.KindFile: atollv1.EntryKind_ENTRY_KIND_FILE, storage.KindDir: atollv1.EntryKind_ENTRY_KIND_DIRECTORY,
			storage.KindSymlink: atollv1.EntryKind_ENTRY_KIND_SYMLINK,
		}[e.Kind]
		out = append(out, &atollv1.SyncEntry{Path: e.Path, Kind: kind, Size: e.Size, Mode: uint32(e.Mode), LinkTarget: e.LinkTarget})
	}
	return out
}

// grpcSync syncs tr as the SDK does, sending each file in 2-byte pieces;
// breakAfter > 0 cancels the stream after that many pieces.
func grpcSync(ctx context.Context, c atollv1.StorageClient, remote string, tr tree, breakAfter int) (*atollv1.UploadResponse, error) {
	entries := protoEntries(tr)
	plan, err := c.PlanSync(ctx, &atollv1.PlanSyncRequest{RemoteDir: remote, Entries: entries})
	if err != nil {
		return nil, err
	}
	stored := map[uint32][]byte{}
	for _, s := range plan.GetStored() {
		stored[s.GetEntry()] = s.GetSha256()
	}
	var files []uint32
	for i, e := range entries {
		sum := sha256.Sum256([]byte(tr[e.Path].content))
		if e.Kind == atollv1.EntryKind_ENTRY_KIND_FILE && !bytes.Equal(stored[uint32(i)], sum[:]) {
			files = append(files, uint32(i))
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.Upload(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(&atollv1.UploadRequest{Start: &atollv1.UploadStart{SyncId: plan.GetSyncId(), Files: files}}); err != nil {
		return nil, sendError(stream, err)
	}
	// Each message holds up to three pieces of 2 bytes, so that small files
	// share messages and larger ones span several.
	var pieces []*atollv1.FilePiece
	flush := func() error {
		if len(pieces) == 0 {
			return nil
		}
		err := stream.Send(&atollv1.UploadRequest{Pieces: pieces})
		pieces = nil
		return err
	}
	sent := 0
	for _, i := range files {
		data := []byte(tr[entries[i].Path].content)
		sum := sha256.Sum256(data)
		for {
			n := min(2, len(data))
			piece := &atollv1.FilePiece{Data: data[:n]}
			data = data[n:]
			if len(data) == 0 {
				piece.End = &atollv1.FileEnd{Sha256: sum[:]}
			}
			pieces = append(pieces, piece)
			if len(pieces) == 3 {
				if err := flush(); err != nil {
					return nil, sendError(stream, err)
				}
			}
			if sent++; sent == breakAfter {
				cancel()
				_, err := stream.CloseAndRecv()
				return nil, err
			}
			if len(data) == 0 {
				break
			}
		}
	}
	if err := flush(); err != nil {
		return nil, sendError(stream, err)
	}
	return stream.CloseAndRecv()
}

// sendError is the stream's status when a Send failed with io.EOF: the
// server ended the upload (a refusal), and only receiving tells why.
func sendError(stream grpc.ClientStreamingClient[atollv1.UploadRequest, atollv1.UploadResponse], err error) error {
	if errors.Is(err, io.EOF) {
		_, err = stream.CloseAndRecv()
	}
	return err
}

func TestServiceSync(t *testing.T) {
	c, store := startService(t, storage.Options{})
	ctx := asAccount("acme")
	tr := tree{"a": {content: "alpha"}, "d": {isDir: true}, "d/b": {content: "beta"}, "l": {link: "d/b"}}
	resp, err := grpcSync(ctx, c, "/data/x/", tr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRemoteDir() != "/data/x" || resp.GetFilesWritten() != 2 || resp.GetBytesWritten() != 9 {
		t.Errorf("first sync: %v", resp)
	}
	resp, err = grpcSync(ctx, c, "/data/x", tr, 0)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetFilesWritten() != 0 || resp.GetBytesWritten() != 0 || resp.GetFilesUnchanged() != 2 {
		t.Errorf("second sync sent something: %v", resp)
	}
	got := readTree(t, filepath.Join(accountDir(t, store, "acme"), "x"))
	if got["d/b"].content != "beta" || got["l"].link != "d/b" {
		t.Errorf("stored %v", got)
	}
}

func TestServiceErrors(t *testing.T) {
	tests := []struct {
		name   string
		remote string
		tree   tree
		want   codes.Code
	}{
		{name: "outside /data", remote: "/etc", tree: tree{"a": {content: "a"}}, want: codes.InvalidArgument},
		{name: "relative remote", remote: "data/x", want: codes.InvalidArgument},
		{name: "dot dot remote", remote: "/data/../root", want: codes.InvalidArgument},
		{name: "traversal entry", remote: "/data/x", tree: tree{"../../escape": {content: "a"}}, want: codes.InvalidArgument},
		{name: "absolute entry", remote: "/data/x", tree: tree{"/etc/cron.d/x": {content: "a"}}, want: codes.InvalidArgument},
		{name: "escaping symlink", remote: "/data/x", tree: tree{"l": {link: "../../../etc/passwd"}}, want: codes.InvalidArgument},
		{name: "absolute symlink", remote: "/data/x", tree: tree{"l": {link: "/etc/passwd"}}, want: codes.InvalidArgument},
		{name: "over quota", remote: "/data/x", tree: tree{"big": {content: strings.Repeat("x", 101)}}, want: codes.ResourceExhausted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, store := startService(t, storage.Options{QuotaBytes: 100})
			_, err := grpcSync(asAccount("acme"), c, tt.remote, tt.tree, 0)
			if got := status.Code(err); got != tt.want {
				t.Fatalf("sync = %v; want code %v", err, tt.want)
			}
			if got := readTree(t, accountDir(t, store, "acme")); len(got) != 0 {
				t.Errorf("a refused sync stored %v", got)
			}
		})
	}
}

func TestServiceConflict(t *testing.T) {
	c, _ := startService(t, storage.Options{})
	ctx := asAccount("acme")
	if _, err := grpcSync(ctx, c, "/data", tree{"x": {isDir: true}}, 0); err != nil {
		t.Fatal(err)
	}
	_, err := grpcSync(ctx, c, "/data", tree{"x": {content: "x"}}, 0)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "/data/x") {
		t.Fatalf("sync = %v; want FailedPrecondition naming /data/x", err)
	}
}

func TestServiceUnknownSync(t *testing.T) {
	c, _ := startService(t, storage.Options{})
	stream, err := c.Upload(asAccount("acme"))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&atollv1.UploadRequest{Start: &atollv1.UploadStart{SyncId: "made-up"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.NotFound {
		t.Fatalf("upload = %v; want NotFound", err)
	}
}

func TestServiceInterruptedUpload(t *testing.T) {
	c, store := startService(t, storage.Options{})
	ctx := asAccount("acme")
	if _, err := grpcSync(ctx, c, "/data", tree{"f": {content: "old"}}, 0); err != nil {
		t.Fatal(err)
	}
	_, err := grpcSync(ctx, c, "/data", tree{"f": {content: "new and longer"}, "g": {content: "another"}}, 3)
	if status.Code(err) != codes.Canceled {
		t.Fatalf("interrupted sync = %v; want Canceled", err)
	}
	if _, err := grpcSync(ctx, c, "/data/other", tree{"h": {content: "h"}}, 0); err != nil {
		t.Fatal(err)
	}
	dir := accountDir(t, store, "acme")
	got := readTree(t, dir)
	want := tree{"f": {content: "old", mode: 0o644}, "other": {isDir: true, mode: 0o755}, "other/h": {content: "h", mode: 0o644}}
	if diff := cmp.Diff(want, got, cmpNode); diff != "" {
		t.Errorf("after an interrupted sync (-want +got):\n%s", diff)
	}
	waitGone(t, filepath.Join(dir, stagingDir))
}

func TestServiceAccountsIsolated(t *testing.T) {
	c, store := startService(t, storage.Options{})
	if _, err := grpcSync(asAccount("alice"), c, "/data", tree{"secret": {content: "alice's secret"}}, 0); err != nil {
		t.Fatal(err)
	}
	plan, err := c.PlanSync(asAccount("bob"), &atollv1.PlanSyncRequest{RemoteDir: "/data", Entries: protoEntries(tree{"secret": {content: "alice's secret"}})})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetStored()) != 0 {
		t.Errorf("bob's plan reveals alice's files: %v", plan.GetStored())
	}
	// Bob cannot use alice's plan either.
	plan, err = c.PlanSync(asAccount("alice"), &atollv1.PlanSyncRequest{RemoteDir: "/data", Entries: protoEntries(tree{"x": {content: ""}})})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.Upload(asAccount("bob"))
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&atollv1.UploadRequest{Start: &atollv1.UploadStart{SyncId: plan.GetSyncId(), Files: []uint32{0}}})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.NotFound {
		t.Errorf("bob using alice's sync: %v; want NotFound", err)
	}
	// A request without an authenticated caller acts for no account at all.
	if _, err := grpcSync(context.Background(), c, "/data", tree{"anon": {content: "a"}}, 0); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("sync without a caller = %v; want Unauthenticated", err)
	}
	for account, want := range map[string][]string{"alice": {"secret"}, "bob": nil, "default": nil} {
		var names []string
		for p := range readTree(t, accountDir(t, store, account)) {
			names = append(names, p)
		}
		if len(names) != len(want) || len(want) == 1 && names[0] != want[0] {
			t.Errorf("account %s stores %v; want %v", account, names, want)
		}
	}
}

func waitGone(t *testing.T, p string) {
	t.Helper()
	for range 200 {
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s still exists", p)
}
