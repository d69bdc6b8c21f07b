package storage

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
	"github.com/atoll-dev/atoll/internal/auth"
)

// ServiceOptions configures the Storage service.
type ServiceOptions struct {
	// DefaultAccount acts for requests without an authenticated principal.
	DefaultAccount string
	Logger         *slog.Logger
}

// Service implements atoll.v1.Storage over a Store. It only ever touches
// the directory of the caller's own account.
type Service struct {
	atollv1.UnimplementedStorageServer
	store *Store
	opts  ServiceOptions
	log   *slog.Logger
}

// NewService returns the Storage service over store.
func NewService(store *Store, opts ServiceOptions) *Service {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, opts: opts, log: log}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(gs *grpc.Server) {
	atollv1.RegisterStorageServer(gs, s)
}

func (s *Service) accountOf(ctx context.Context) string {
	if p, ok := auth.PrincipalFrom(ctx); ok {
		return p.Account
	}
	return s.opts.DefaultAccount
}

// PlanSync checks the manifest and tells the client which files are stored
// with the same size, and their hashes.
func (s *Service) PlanSync(ctx context.Context, req *atollv1.PlanSyncRequest) (*atollv1.PlanSyncResponse, error) {
	entries := make([]Entry, len(req.GetEntries()))
	for i, e := range req.GetEntries() {
		entries[i] = Entry{
			Path:       e.GetPath(),
			Kind:       kindFromProto(e.GetKind()),
			Size:       e.GetSize(),
			Mode:       fsMode(e.GetMode()),
			LinkTarget: e.GetLinkTarget(),
		}
	}
	account := s.accountOf(ctx)
	p, err := s.store.Plan(ctx, account, req.GetRemoteDir(), entries)
	if err != nil {
		return nil, s.status(err, account)
	}
	resp := &atollv1.PlanSyncResponse{SyncId: p.ID, RemoteDir: p.RemoteDir}
	for i, e := range entries {
		if sum, ok := p.Stored[i]; ok && e.Kind == KindFile {
			resp.Stored = append(resp.Stored, &atollv1.StoredFile{Entry: uint32(i), Sha256: sum})
		}
	}
	return resp, nil
}

// Upload receives the content of a planned sync and commits it when the
// client closes the stream. A stream that fails or is cancelled commits
// nothing.
func (s *Service) Upload(stream grpc.ClientStreamingServer[atollv1.UploadRequest, atollv1.UploadResponse]) error {
	ctx := stream.Context()
	account := s.accountOf(ctx)
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

// status maps an error to the gRPC status the SDK turns into an exception.
// Domain errors carry messages meant for the user; anything else is logged
// and reported without detail, since it may name server paths.
func (s *Service) status(err error, account string) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	var code codes.Code
	switch {
	case errors.Is(err, ErrInvalidPath), errors.Is(err, ErrInvalidManifest), errors.Is(err, ErrInvalidAccount):
		code = codes.InvalidArgument
	case errors.Is(err, ErrConflict):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrQuotaExceeded):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrUnknownSync):
		code = codes.NotFound
	case errors.Is(err, ErrContentMismatch):
		code = codes.Aborted
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "the sync was cancelled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the sync ran out of time")
	default:
		s.log.Error("storage request failed", "account", account, "err", err)
		return status.Error(codes.Internal, "internal storage error; the server log has the details")
	}
	return status.Error(code, err.Error())
}

func kindFromProto(k atollv1.EntryKind) Kind {
	switch k {
	case atollv1.EntryKind_ENTRY_KIND_FILE:
		return KindFile
	case atollv1.EntryKind_ENTRY_KIND_DIRECTORY:
		return KindDir
	case atollv1.EntryKind_ENTRY_KIND_SYMLINK:
		return KindSymlink
	}
	return 0
}

func fsMode(m uint32) fs.FileMode { return fs.FileMode(m) & fs.ModePerm }
