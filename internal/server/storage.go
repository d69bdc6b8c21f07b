package server

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/storage"
)

// Storage implements atoll.v1.Storage over a storage.Store. It only ever
// touches the directory of the caller's own account.
type Storage struct {
	atollv1.UnimplementedStorageServer
	store *storage.Store
	log   *slog.Logger
}

// NewStorage returns the Storage service over store.
func NewStorage(store *storage.Store, log *slog.Logger) *Storage {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Storage{store: store, log: log}
}

// Register adds the service to a gRPC server.
func (s *Storage) Register(gs *grpc.Server) {
	atollv1.RegisterStorageServer(gs, s)
}

// PlanSync checks the manifest and tells the client which files are stored
// with the same size, and their hashes.
func (s *Storage) PlanSync(ctx context.Context, req *atollv1.PlanSyncRequest) (*atollv1.PlanSyncResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(s.log, err)
	}
	entries := make([]storage.Entry, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		entries[i] = storage.Entry{
			Path:       e.GetPath(),
			Kind:       kindFromProto(e.GetKind()),
			Size:       e.GetSize(),
			Mode:       fsMode(e.GetMode()),
			LinkTarget: e.GetLinkTarget(),
		}
	}
	p, err := s.store.Plan(ctx, account, req.GetRemoteDir(), entries)
	if err != nil {
		return nil, s.status(err, account)
	}
	resp := &atollv1.PlanSyncResponse{SyncId: p.ID, RemoteDir: p.RemoteDir}
	for i, e := range entries {
		if sum, ok := p.Stored[i]; ok && e.Kind == storage.KindFile {
			resp.Stored = append(resp.Stored, &atollv1.StoredFile{Entry: uint32(i), Sha256: sum})
		}
	}
	return resp, nil
}

// Upload receives the content of a planned sync and commits it when the
// client closes the stream. A stream that fails or is cancelled commits
// nothing.
func (s *Storage) Upload(stream grpc.ClientStreamingServer[atollv1.UploadRequest, atollv1.UploadResponse]) error {
	ctx := stream.Context()
	account, err := accountOf(ctx)
	if err != nil {
		return rpcStatus(s.log, err)
	}
	msg, err := stream.Recv()
	if err != nil {
		return s.status(err, account)
	}
	start := msg.GetStart()
	if start == nil {
		return status.Error(codes.InvalidArgument, "an upload must begin with UploadStart")
	}
	files := make([]int, len(start.GetFiles()))
	for i, f := range start.GetFiles() {
		files[i] = int(f)
	}
	u, err := s.store.BeginUpload(ctx, account, start.GetSyncId(), files)
	if err != nil {
		return s.status(err, account)
	}
	defer u.Close()
	for {
		for _, piece := range msg.GetPieces() {
			if _, err := u.Write(piece.GetData()); err != nil {
				return s.status(err, account)
			}
			if end := piece.GetEnd(); end != nil {
				if err := u.EndFile(end.GetSha256()); err != nil {
					return s.status(err, account)
				}
			}
		}
		msg, err = stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			s.log.Info("upload interrupted", "account", account, "err", err)
			return s.status(err, account)
		}
		if msg.GetStart() != nil {
			return status.Error(codes.InvalidArgument, "UploadStart may only come first")
		}
	}
	res, err := u.Commit(ctx)
	if err != nil {
		return s.status(err, account)
	}
	return stream.SendAndClose(&atollv1.UploadResponse{
		RemoteDir:      res.RemoteDir,
		FilesWritten:   res.FilesWritten,
		BytesWritten:   res.BytesWritten,
		FilesUnchanged: res.FilesUnchanged,
	})
}

// status maps a storage error through rpcStatus, naming the account in
// the log.
func (s *Storage) status(err error, account string) error {
	return rpcStatus(s.log, err, "account", account)
}

func kindFromProto(k atollv1.EntryKind) storage.Kind {
	switch k {
	case atollv1.EntryKind_ENTRY_KIND_FILE:
		return storage.KindFile
	case atollv1.EntryKind_ENTRY_KIND_DIRECTORY:
		return storage.KindDir
	case atollv1.EntryKind_ENTRY_KIND_SYMLINK:
		return storage.KindSymlink
	}
	return 0
}

func fsMode(m uint32) fs.FileMode { return fs.FileMode(m) & fs.ModePerm }
