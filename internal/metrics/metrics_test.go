package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

func TestHooksMoveCounters(t *testing.T) {
	m := New(nil)
	m.WorkerLeased("XS", false, 2*time.Second, 90*time.Millisecond)
	m.WorkerLeased("XS", true, 0, 0)
	m.WorkerLeased("XS", true, 0, 0)
	start := time.Now()
	m.RunFinished(state.Run{MachineType: "XS", Outcome: state.OutcomeOK, StartedAt: start, FinishedAt: start.Add(time.Second)})
	m.RunFinished(state.Run{MachineType: "XS", Outcome: state.OutcomeBuildFailed})
	m.OnBuild(3*time.Second, nil)
	m.OnBuild(time.Second, errors.New("uv failed"))

	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"cold leases", testutil.ToFloat64(m.leases.WithLabelValues("cold", "XS")), 1},
		{"warm leases", testutil.ToFloat64(m.leases.WithLabelValues("warm", "XS")), 2},
		{"ok calls", testutil.ToFloat64(m.calls.WithLabelValues("ok", "XS")), 1},
		{"failed builds", testutil.ToFloat64(m.calls.WithLabelValues("build_failed", "XS")), 1},
		{"builds ok", testutil.ToFloat64(m.builds.WithLabelValues("ok")), 1},
		{"builds failed", testutil.ToFloat64(m.builds.WithLabelValues("failed")), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	// Only the run that a worker took has a run time; only the cold lease
	// a cold-start time; every lease a queue time.
	for name, want := range map[string]int{"atoll_call_run_seconds": 1, "atoll_call_cold_start_seconds": 1, "atoll_call_queue_seconds": 3} {
		if got := histogramCount(t, m, name); got != want {
			t.Errorf("%s count = %d, want %d", name, got, want)
		}
	}
}

func histogramCount(t *testing.T, m *Metrics, name string) int {
	t.Helper()
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			n := 0
			for _, metric := range f.GetMetric() {
				n += int(metric.GetHistogram().GetSampleCount())
			}
			return n
		}
	}
	return 0
}

func TestGaugesReadAtScrape(t *testing.T) {
	m := New(nil)
	capacity := machine.NewCapacity(machine.Host{CPUs: 4, MemoryBytes: 8 << 30})
	grant, err := capacity.TryAcquire(machine.Type{Name: "S", CPUs: 0.5, MemoryBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer grant.Release()
	m.Watch(Sources{
		Workers: func() []scheduler.WorkerInfo {
			return []scheduler.WorkerInfo{
				{ID: "w-1", Key: scheduler.PoolKey{MachineType: "S"}, Idle: true},
				{ID: "w-2", Key: scheduler.PoolKey{MachineType: "S"}},
			}
		},
		Capacity:     capacity,
		Environments: func() ([]envbuild.Info, error) { return []envbuild.Info{{Key: "k", SizeBytes: 1000}}, nil },
		DataUsage:    func() (map[string]int64, error) { return map[string]int64{"alice": 42}, nil },
		DataQuota:    10 << 30,
	})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`atoll_workers{machine_type="S",state="idle"} 1`,
		`atoll_workers{machine_type="S",state="busy"} 1`,
		`atoll_capacity_cpus{kind="total"} 4`,
		`atoll_capacity_cpus{kind="used"} 0.5`,
		`atoll_capacity_memory_bytes{kind="used"} 1.073741824e+09`,
		`atoll_queue_waiting 0`,
		`atoll_environments 1`,
		`atoll_environments_bytes 1000`,
		`atoll_data_bytes{account="alice"} 42`,
		`atoll_data_quota_bytes 1.073741824e+10`,
		`go_goroutines `,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q:\n%s", want, body)
		}
	}
}
