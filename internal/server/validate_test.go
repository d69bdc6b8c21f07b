package server

import (
	"context"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

func TestValidateFieldsNamesTheField(t *testing.T) {
	run := func(edit func(*atollv1.RunRequest)) *atollv1.RunRequest {
		r := &atollv1.RunRequest{FunctionName: "m.f", Function: []byte{1}, MachineType: "XS", KeepAliveSeconds: 10,
			Environment: &atollv1.Environment{PythonVersion: "3.11", Requirements: []string{"six"}}}
		edit(r)
		return r
	}
	tests := []struct {
		name  string
		msg   any
		field string // "" means valid
	}{
		{"valid run", run(func(*atollv1.RunRequest) {}), ""},
		{"keep_alive at its maximum", run(func(r *atollv1.RunRequest) { r.KeepAliveSeconds = MaxKeepAlive }), ""},
		{"huge function name", run(func(r *atollv1.RunRequest) { r.FunctionName = strings.Repeat("f", 5<<20) }), "function_name"},
		{"infinite keep_alive", run(func(r *atollv1.RunRequest) { r.KeepAliveSeconds = math.Inf(1) }), "keep_alive_seconds"},
		{"1e300 keep_alive", run(func(r *atollv1.RunRequest) { r.KeepAliveSeconds = 1e300 }), "keep_alive_seconds"},
		{"NaN keep_alive", run(func(r *atollv1.RunRequest) { r.KeepAliveSeconds = math.NaN() }), "keep_alive_seconds"},
		{"negative keep_alive", run(func(r *atollv1.RunRequest) { r.KeepAliveSeconds = -1 }), "keep_alive_seconds"},
		{"long machine type", run(func(r *atollv1.RunRequest) { r.MachineType = strings.Repeat("M", 65) }), "machine_type"},
		{"long python version", run(func(r *atollv1.RunRequest) { r.Environment.PythonVersion = strings.Repeat("3", 17) }), "environment.python_version"},
		{"too many requirements", run(func(r *atollv1.RunRequest) { r.Environment.Requirements = make([]string, MaxRequirements+1) }), "environment.requirements"},
		{"long requirement", run(func(r *atollv1.RunRequest) {
			r.Environment.Requirements[0] = strings.Repeat("x", MaxRequirementBytes+1)
		}), "environment.requirements[0]"},
		{"runs limit", &atollv1.ListRunsRequest{Limit: MaxRunsLimit + 1}, "limit"},
		{"negative runs limit", &atollv1.ListRunsRequest{Limit: -1}, "limit"},
		{"run id", &atollv1.GetRunLogsRequest{RunId: strings.Repeat("r", 65)}, "run_id"},
		{"remote dir", &atollv1.PlanSyncRequest{RemoteDir: "/data/" + strings.Repeat("d", MaxRemoteDirBytes)}, "remote_dir"},
		{"sync path", &atollv1.PlanSyncRequest{RemoteDir: "/data", Entries: []*atollv1.SyncEntry{{Path: strings.Repeat("p", MaxSyncPathBytes+1)}}}, "entries[0].path"},
		{"negative size", &atollv1.PlanSyncRequest{RemoteDir: "/data", Entries: []*atollv1.SyncEntry{{Path: "a", Size: -1}}}, "entries[0].size"},
		{"sync id", &atollv1.UploadRequest{Start: &atollv1.UploadStart{SyncId: strings.Repeat("s", 65)}}, "start.sync_id"},
		{"piece", &atollv1.UploadRequest{Pieces: []*atollv1.FilePiece{{Data: make([]byte, MaxFilePieceBytes+1)}}}, "pieces[0].data"},
		{"hash", &atollv1.UploadRequest{Pieces: []*atollv1.FilePiece{{End: &atollv1.FileEnd{Sha256: make([]byte, 33)}}}}, "pieces[0].end.sha256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := validateFields(tc.msg)
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("valid message refused: %v", err)
			case tc.field != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.field)):
				t.Fatalf("error %v, want one naming %s", err, tc.field)
			case err != nil && len(err.Error()) > 200:
				t.Fatalf("error echoes the value: %d bytes", len(err.Error()))
			}
		})
	}
}

func TestCodecTurnsUndecodableRequestsIntoInvalidArgument(t *testing.T) {
	c := RequestCodec()
	whole, err := proto.Marshal(&atollv1.GetRunLogsRequest{RunId: "r-1"})
	if err != nil {
		t.Fatal(err)
	}
	unary, _ := c.ValidateRequests()
	handled := false
	handler := func(context.Context, any) (any, error) { handled = true; return nil, nil }
	for _, tc := range []struct {
		name string
		data []byte
		code codes.Code
	}{
		{"whole", whole, codes.OK},
		{"truncated", whole[:len(whole)-1], codes.InvalidArgument},
		{"garbage", []byte{0xff, 0xff, 0xff}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			handled = false
			req := new(atollv1.GetRunLogsRequest)
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.data)}, req); err != nil {
				t.Fatalf("Unmarshal returned %v; gRPC would call it Internal", err)
			}
			_, err := unary(context.Background(), req, &grpc.UnaryServerInfo{}, handler)
			if got := status.Code(err); got != tc.code || handled != (tc.code == codes.OK) {
				t.Fatalf("code %v (handler ran: %v), want %v", got, handled, tc.code)
			}
		})
	}
}
