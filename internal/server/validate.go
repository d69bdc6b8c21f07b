package server

import (
	"context"
	"fmt"
	"math"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	protocodec "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// Bounds of request fields, checked at the edge (ValidateRequests) before a
// handler sees the request. docs/limits.md lists them; a request outside
// them fails with codes.InvalidArgument and a message naming the field.
const (
	MaxFunctionNameBytes   = 1 << 10
	MaxMachineTypeBytes    = 64
	MaxPythonVersionBytes  = 16
	MaxRequirements        = 500
	MaxRequirementBytes    = 4 << 10
	MaxKeepAlive           = 24 * 60 * 60 // seconds
	MaxRunsLimit           = 1000
	MaxRunIDBytes          = 64
	MaxSyncIDBytes         = 64
	MaxRemoteDirBytes      = 4 << 10
	MaxSyncEntries         = 1_000_000
	MaxSyncPathBytes       = 4 << 10
	MaxFilePieceBytes      = 16 << 20
	MaxFileHashBytes       = 32
	MaxFilePiecesPerUpload = 1 << 16
	MaxSecretsPerCall      = 64
	MaxSecretNameBytes     = 128
	MaxSecretValues        = 256
	MaxSecretKeyBytes      = 256
	MaxSecretValueBytes    = 64 << 10
	MaxMapConcurrency      = 10_000
	MaxMapItemsPerMessage  = 1 << 16
)

// DefaultMaxMessageBytes is the default of the server's payload limit: the
// largest request or response message (a call's serialized function and
// arguments, or its result). It applies to authenticated callers only;
// nothing of an unauthenticated one is read.
const DefaultMaxMessageBytes = MaxMessageBytes

// RequestCodec returns the server's codec: protobuf, except that a request
// that does not decode is handed on, marked, so that ValidateRequests
// refuses it with codes.InvalidArgument. gRPC itself reports a message that
// fails to decode as codes.Internal, which would blame the server for the
// caller's bytes. Install both with grpc.ForceServerCodecV2 and the
// interceptors of ValidateRequests.
func RequestCodec() *Codec {
	return &Codec{CodecV2: encoding.GetCodecV2(protocodec.Name)}
}

// Codec is the codec RequestCodec returns.
type Codec struct {
	encoding.CodecV2
	// failed holds the decode error of each message that did not decode,
	// by the message, until an interceptor takes it.
	failed sync.Map
}

// Unmarshal decodes data into v; a failure is recorded for the
// interceptors rather than returned.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if err := c.CodecV2.Unmarshal(data, v); err != nil {
		c.failed.Store(v, err)
	}
	return nil
}

// check returns the InvalidArgument error for a message that failed to
// decode or is outside its fields' bounds.
func (c *Codec) check(msg any) error {
	if err, failed := c.failed.LoadAndDelete(msg); failed {
		return status.Errorf(codes.InvalidArgument, "the request is not a valid %T message: %v", msg, err)
	}
	if err := validateFields(msg); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

// ValidateRequests returns the interceptors that refuse requests that did
// not decode (with c as the server's codec) or break a field's bound. They
// must come first in the chain, so that every decoded message is checked.
func (c *Codec) ValidateRequests() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	unary := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := c.check(req); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
	stream := func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &checkedStream{ServerStream: ss, c: c})
	}
	return unary, stream
}

type checkedStream struct {
	grpc.ServerStream
	c *Codec
}

func (s *checkedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return s.c.check(m)
}

// validateFields checks the bounds of the fields of one request message.
func validateFields(msg any) error {
	switch m := msg.(type) {
	case *atollv1.RunRequest:
		return validateRun(m)
	case *atollv1.ListRunsRequest:
		if l := m.GetLimit(); l < 0 || l > MaxRunsLimit {
			return fmt.Errorf("limit must be between 0 (the default, %d) and %d, got %d", defaultRunsLimit, MaxRunsLimit, l)
		}
	case *atollv1.GetRunLogsRequest:
		return maxBytes("run_id", m.GetRunId(), MaxRunIDBytes)
	case *atollv1.PlanSyncRequest:
		return validatePlan(m)
	case *atollv1.UploadRequest:
		return validateUpload(m)
	case *atollv1.MapRequest:
		return validateMap(m)
	case *atollv1.CancelRunRequest:
		return maxBytes("run_id", m.GetRunId(), MaxRunIDBytes)
	case *atollv1.SetSecretRequest:
		return validateSecret(m)
	case *atollv1.DeleteSecretRequest:
		return maxBytes("name", m.GetName(), MaxSecretNameBytes)
	}
	return nil
}

func validateMap(m *atollv1.MapRequest) error {
	if start := m.GetStart(); start != nil {
		if err := validateRun(start); err != nil {
			return fmt.Errorf("start: %w", err)
		}
	}
	if n := len(m.GetItems().GetItems()); n > MaxMapItemsPerMessage {
		return fmt.Errorf("items has %d entries; at most %d are allowed in one message", n, MaxMapItemsPerMessage)
	}
	return nil
}

func validateSecret(m *atollv1.SetSecretRequest) error {
	if err := maxBytes("name", m.GetName(), MaxSecretNameBytes); err != nil {
		return err
	}
	if n := len(m.GetValues()); n > MaxSecretValues {
		return fmt.Errorf("values has %d entries; at most %d are allowed", n, MaxSecretValues)
	}
	for k, v := range m.GetValues() {
		if err := maxBytes("values key", k, MaxSecretKeyBytes); err != nil {
			return err
		}
		if len(v) > MaxSecretValueBytes {
			// The value is never echoed: it is a secret.
			return fmt.Errorf("values[%q] is %d bytes; at most %d are allowed", k, len(v), MaxSecretValueBytes)
		}
	}
	return nil
}

func validateRun(m *atollv1.RunRequest) error {
	if err := maxBytes("function_name", m.GetFunctionName(), MaxFunctionNameBytes); err != nil {
		return err
	}
	if err := maxBytes("machine_type", m.GetMachineType(), MaxMachineTypeBytes); err != nil {
		return err
	}
	if k := m.GetKeepAliveSeconds(); math.IsNaN(k) || k < 0 || k > MaxKeepAlive {
		return fmt.Errorf("keep_alive_seconds must be a number of seconds from 0 to %d (24 h), got %v", MaxKeepAlive, k)
	}
	// timeout_seconds and retries are checked with the call (calls.go):
	// their bounds depend on the server's --max-call-timeout.
	if n := len(m.GetSecrets()); n > MaxSecretsPerCall {
		return fmt.Errorf("secrets has %d entries; at most %d are allowed", n, MaxSecretsPerCall)
	}
	for i, name := range m.GetSecrets() {
		if err := maxBytes(fmt.Sprintf("secrets[%d]", i), name, MaxSecretNameBytes); err != nil {
			return err
		}
	}
	if c := m.GetMaxConcurrency(); c < 0 || c > MaxMapConcurrency {
		return fmt.Errorf("max_concurrency must be between 0 (no limit) and %d, got %d", MaxMapConcurrency, c)
	}
	env := m.GetEnvironment()
	if err := maxBytes("environment.python_version", env.GetPythonVersion(), MaxPythonVersionBytes); err != nil {
		return err
	}
	reqs := env.GetRequirements()
	if len(reqs) > MaxRequirements {
		return fmt.Errorf("environment.requirements has %d entries; at most %d are allowed", len(reqs), MaxRequirements)
	}
	for i, r := range reqs {
		if err := maxBytes(fmt.Sprintf("environment.requirements[%d]", i), r, MaxRequirementBytes); err != nil {
			return err
		}
	}
	return nil
}

func validatePlan(m *atollv1.PlanSyncRequest) error {
	if err := maxBytes("remote_dir", m.GetRemoteDir(), MaxRemoteDirBytes); err != nil {
		return err
	}
	entries := m.GetEntries()
	if len(entries) > MaxSyncEntries {
		return fmt.Errorf("entries has %d entries; at most %d are allowed in one sync", len(entries), MaxSyncEntries)
	}
	for i, e := range entries {
		if err := maxBytes(fmt.Sprintf("entries[%d].path", i), e.GetPath(), MaxSyncPathBytes); err != nil {
			return err
		}
		if err := maxBytes(fmt.Sprintf("entries[%d].link_target", i), e.GetLinkTarget(), MaxSyncPathBytes); err != nil {
			return err
		}
		if e.GetSize() < 0 {
			return fmt.Errorf("entries[%d].size must not be negative, got %d", i, e.GetSize())
		}
	}
	return nil
}

func validateUpload(m *atollv1.UploadRequest) error {
	if start := m.GetStart(); start != nil {
		if err := maxBytes("start.sync_id", start.GetSyncId(), MaxSyncIDBytes); err != nil {
			return err
		}
		if n := len(start.GetFiles()); n > MaxSyncEntries {
			return fmt.Errorf("start.files has %d entries; at most %d are allowed", n, MaxSyncEntries)
		}
	}
	pieces := m.GetPieces()
	if len(pieces) > MaxFilePiecesPerUpload {
		return fmt.Errorf("pieces has %d entries; at most %d are allowed in one message", len(pieces), MaxFilePiecesPerUpload)
	}
	for i, p := range pieces {
		if n := len(p.GetData()); n > MaxFilePieceBytes {
			return fmt.Errorf("pieces[%d].data is %d bytes; at most %d are allowed in one piece", i, n, MaxFilePieceBytes)
		}
		if n := len(p.GetEnd().GetSha256()); n > MaxFileHashBytes {
			return fmt.Errorf("pieces[%d].end.sha256 is %d bytes; a SHA-256 is %d", i, n, MaxFileHashBytes)
		}
	}
	return nil
}

// maxBytes bounds a string field, naming it and the bound without echoing
// the value, which may be huge.
func maxBytes(field, value string, max int) error {
	if len(value) > max {
		return fmt.Errorf("%s is %d bytes; at most %d are allowed", field, len(value), max)
	}
	return nil
}
