package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/secrets"
	"github.com/atoll-dev/atoll/internal/state"
)

// Admin implements atoll.v1.Admin.
type Admin struct {
	atollv1.UnimplementedAdminServer
	opts AdminOptions
	log  *slog.Logger
}

// AdminOptions is what the Admin service reports on.
type AdminOptions struct {
	Version        string
	Sandbox        string
	SandboxWarning string
	Scheduler      *scheduler.Scheduler
	Catalog        machine.Catalog
	Capacity       *machine.Capacity
	// Store, if set, serves the run history.
	Store *state.Store
	// Running, shared with the Functions service, finds runs to cancel.
	Running *Running
	// Secrets, if set, keeps the accounts' secrets.
	Secrets *secrets.Vault
	Logger  *slog.Logger
}

// NewAdmin returns the Admin service.
func NewAdmin(opts AdminOptions) *Admin {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Admin{opts: opts, log: log}
}

// Status describes the server to the caller.
func (a *Admin) Status(ctx context.Context, _ *atollv1.StatusRequest) (*atollv1.StatusResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	resp := &atollv1.StatusResponse{
		Version:        a.opts.Version,
		Sandbox:        a.opts.Sandbox,
		SandboxWarning: a.opts.SandboxWarning,
		Account:        account,
	}
	if c := a.opts.Capacity; c != nil {
		resp.Capacity = c.Host().String()
		resp.Used = c.Used().String()
		resp.Waiting = int32(c.Waiting())
		if a.opts.Scheduler != nil {
			resp.Waiting = int32(a.opts.Scheduler.Waiting())
		}
	}
	for _, t := range a.opts.Catalog.Types() {
		resp.MachineTypes = append(resp.MachineTypes, &atollv1.MachineType{
			Name: t.Name, Cpus: t.CPUs, MemoryBytes: t.MemoryBytes, Gpus: int32(t.GPUs), GpuModel: t.GPUModel,
		})
	}
	return resp, nil
}

// Register adds the service to a gRPC server.
func (a *Admin) Register(s *grpc.Server) {
	atollv1.RegisterAdminServer(s, a)
}

// ListWorkers lists the live workers of the caller's account.
func (a *Admin) ListWorkers(ctx context.Context, _ *atollv1.ListWorkersRequest) (*atollv1.ListWorkersResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	resp := &atollv1.ListWorkersResponse{}
	for _, w := range a.opts.Scheduler.Workers() {
		if w.Key.Account != account {
			continue
		}
		resp.Workers = append(resp.Workers, &atollv1.WorkerInfo{
			Id:             w.ID,
			Account:        w.Key.Account,
			FunctionName:   w.Key.Function,
			MachineType:    w.Key.MachineType,
			EnvironmentKey: w.Key.EnvKey,
			Idle:           w.Idle,
			StartedUnixMs:  w.Started.UnixMilli(),
			LastUsedUnixMs: unixMs(w.LastUsed),
		})
	}
	return resp, nil
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// defaultRunsLimit is how many runs ListRuns returns when not told.
const defaultRunsLimit = 50

// ListRuns lists the caller's runs, newest first.
func (a *Admin) ListRuns(ctx context.Context, req *atollv1.ListRunsRequest) (*atollv1.ListRunsResponse, error) {
	if a.opts.Store == nil {
		return nil, status.Error(codes.Unimplemented, "this server keeps no run history")
	}
	limit := int(req.GetLimit())
	if limit <= 0 {
		limit = defaultRunsLimit
	}
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	runs, err := a.opts.Store.ListRuns(ctx, account, limit)
	if err != nil {
		return nil, rpcStatus(a.log, fmt.Errorf("list runs: %w", err), "account", account)
	}
	resp := &atollv1.ListRunsResponse{}
	for _, r := range runs {
		resp.Runs = append(resp.Runs, runInfo(r))
	}
	return resp, nil
}

// GetRunLogs returns one of the caller's runs with its output; another
// account's run is reported as not found.
func (a *Admin) GetRunLogs(ctx context.Context, req *atollv1.GetRunLogsRequest) (*atollv1.GetRunLogsResponse, error) {
	if a.opts.Store == nil {
		return nil, status.Error(codes.Unimplemented, "this server keeps no run history")
	}
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	run, err := a.opts.Store.GetRun(ctx, account, req.GetRunId())
	if errors.Is(err, state.ErrNotFound) {
		return nil, status.Errorf(codes.NotFound, "no run %q in account %s; list runs with `atoll runs`", req.GetRunId(), account)
	}
	if err != nil {
		return nil, rpcStatus(a.log, fmt.Errorf("get run: %w", err), "account", account)
	}
	lines, err := a.opts.Store.Logs(ctx, account, run.ID)
	if err != nil {
		return nil, rpcStatus(a.log, fmt.Errorf("get run logs: %w", err), "account", account)
	}
	resp := &atollv1.GetRunLogsResponse{Run: runInfo(run)}
	for _, l := range lines {
		resp.Lines = append(resp.Lines, &atollv1.LogLine{Stream: streamOf(l.Stream), AtUnixMs: unixMs(l.At), Data: []byte(l.Data)})
	}
	return resp, nil
}

func runInfo(r state.Run) *atollv1.RunInfo {
	info := &atollv1.RunInfo{
		Id: r.ID, FunctionName: r.Function, MachineType: r.MachineType, EnvironmentKey: r.EnvKey,
		QueuedUnixMs: unixMs(r.QueuedAt), StartedUnixMs: unixMs(r.StartedAt), FinishedUnixMs: unixMs(r.FinishedAt),
		Outcome: string(r.Outcome), WorkerId: r.WorkerID, CallId: r.CallID, Attempt: int32(r.Attempt),
	}
	if r.ExitStatus != nil {
		code := int32(*r.ExitStatus)
		info.ExitStatus = &code
	}
	return info
}

func streamOf(s state.Stream) atollv1.Stream {
	switch s {
	case state.StreamStdout:
		return atollv1.Stream_STREAM_STDOUT
	case state.StreamStderr:
		return atollv1.Stream_STREAM_STDERR
	default:
		return atollv1.Stream_STREAM_SYSTEM
	}
}

// CancelRun stops one of the caller's runs in progress.
func (a *Admin) CancelRun(ctx context.Context, req *atollv1.CancelRunRequest) (*atollv1.CancelRunResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	if a.opts.Running == nil {
		return nil, status.Error(codes.Unimplemented, "this server cannot cancel runs")
	}
	if err := a.opts.Running.Cancel(account, req.GetRunId()); err != nil {
		return nil, status.Errorf(codes.NotFound, "%v; `atoll runs` lists runs, and only unfinished ones can be cancelled", err)
	}
	a.log.Info("run cancelled on request", "run", req.GetRunId(), "account", account)
	return &atollv1.CancelRunResponse{}, nil
}

func (a *Admin) vault() (*secrets.Vault, error) {
	if a.opts.Secrets == nil {
		return nil, status.Error(codes.Unimplemented, "this server keeps no secrets")
	}
	return a.opts.Secrets, nil
}

// SetSecret creates or replaces one of the caller's secrets. Its values
// are never logged.
func (a *Admin) SetSecret(ctx context.Context, req *atollv1.SetSecretRequest) (*atollv1.SetSecretResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	v, err := a.vault()
	if err != nil {
		return nil, err
	}
	if err := v.Set(ctx, account, req.GetName(), req.GetValues()); err != nil {
		return nil, rpcStatus(a.log, err, "account", account, "secret", req.GetName())
	}
	return &atollv1.SetSecretResponse{}, nil
}

// ListSecrets lists the caller's secrets without their values.
func (a *Admin) ListSecrets(ctx context.Context, _ *atollv1.ListSecretsRequest) (*atollv1.ListSecretsResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	v, err := a.vault()
	if err != nil {
		return nil, err
	}
	all, err := v.List(ctx, account)
	if err != nil {
		return nil, rpcStatus(a.log, err, "account", account)
	}
	resp := &atollv1.ListSecretsResponse{}
	for _, s := range all {
		resp.Secrets = append(resp.Secrets, &atollv1.SecretInfo{Name: s.Name, Keys: s.Keys, UpdatedUnixMs: unixMs(s.Updated)})
	}
	return resp, nil
}

// DeleteSecret removes one of the caller's secrets.
func (a *Admin) DeleteSecret(ctx context.Context, req *atollv1.DeleteSecretRequest) (*atollv1.DeleteSecretResponse, error) {
	account, err := accountOf(ctx)
	if err != nil {
		return nil, rpcStatus(a.log, err)
	}
	v, err := a.vault()
	if err != nil {
		return nil, err
	}
	if err := v.Delete(ctx, account, req.GetName()); err != nil {
		return nil, rpcStatus(a.log, err, "account", account, "secret", req.GetName())
	}
	return &atollv1.DeleteSecretResponse{}, nil
}
