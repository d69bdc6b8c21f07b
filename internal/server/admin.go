package server

import (
	"context"
	"time"

	"google.golang.org/grpc"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
	"github.com/atoll-dev/atoll/internal/scheduler"
)

// Admin implements atoll.v1.Admin.
type Admin struct {
	atollv1.UnimplementedAdminServer
	sched *scheduler.Scheduler
}

// NewAdmin returns the Admin service over the scheduler.
func NewAdmin(sched *scheduler.Scheduler) *Admin {
	return &Admin{sched: sched}
}

// Register adds the service to a gRPC server.
func (a *Admin) Register(s *grpc.Server) {
	atollv1.RegisterAdminServer(s, a)
}

// ListWorkers lists the live workers of the caller's account.
func (a *Admin) ListWorkers(ctx context.Context, _ *atollv1.ListWorkersRequest) (*atollv1.ListWorkersResponse, error) {
	account := accountOf(ctx)
	resp := &atollv1.ListWorkersResponse{}
	for _, w := range a.sched.Workers() {
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

// accountOf returns the account a request acts for.
func accountOf(context.Context) string {
	return DefaultAccount
}
