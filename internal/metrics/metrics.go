// Package metrics owns the server's Prometheus metrics: one registry (no
// global one), the counters and histograms the scheduler, the run history
// and the environment builder feed through the hooks they expose
// (scheduler.Observer, server.RunObserver, envbuild.Options.OnBuild), and
// the gauges read at scrape time from the parts that hold the state
// (workers, capacity, environments, /data usage).
//
// It only observes: it must not change what it measures, hold locks of
// other packages longer than their own accessors do, or decide who may
// read the metrics (the dashboard serves Handler behind its own rules).
package metrics

import (
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

// Namespace prefixes every metric of atoll's own.
const Namespace = "atoll"

// usageTTL bounds how often a scrape walks the accounts' /data: a walk of
// a large volume takes a while, and scrapers may be many.
const usageTTL = 15 * time.Second

// Sources are the parts whose state the gauges read at scrape time; any
// may be nil, and its gauges are then left out.
type Sources struct {
	Workers      func() []scheduler.WorkerInfo
	Capacity     *machine.Capacity
	Environments func() ([]envbuild.Info, error)
	// DataUsage returns the bytes each account stores in /data.
	DataUsage func() (map[string]int64, error)
	// DataQuota is each account's /data quota in bytes; negative: none.
	DataQuota int64
}

// Metrics holds the registry and the metrics atoll updates as it works.
// It implements scheduler.Observer and server.RunObserver; OnBuild is the
// environment builder's hook.
type Metrics struct {
	reg *prometheus.Registry
	log *slog.Logger

	calls        *prometheus.CounterVec
	runSeconds   *prometheus.HistogramVec
	queueSeconds *prometheus.HistogramVec
	coldSeconds  *prometheus.HistogramVec
	leases       *prometheus.CounterVec
	builds       *prometheus.CounterVec
	buildSeconds prometheus.Histogram

	sources Sources
}

// New returns Metrics with a registry of its own, holding atoll's metrics
// and the Go runtime's and process's collectors.
func New(log *slog.Logger) *Metrics {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Metrics{reg: prometheus.NewRegistry(), log: log}
	// Calls last from milliseconds (warm) to hours; builds from a fraction
	// of a second to many minutes.
	callBuckets := prometheus.ExponentialBuckets(0.001, 4, 12)
	buildBuckets := prometheus.ExponentialBuckets(0.1, 2, 14)
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "calls_total",
		Help: "Calls that ended, by outcome (ok, error, crashed, oom, cancelled, build_failed, timeout) and machine type.",
	}, []string{"outcome", "machine_type"})
	m.runSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "call_run_seconds", Buckets: callBuckets,
		Help: "Time from a worker taking a call to the call's end.",
	}, []string{"machine_type"})
	m.queueSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "call_queue_seconds", Buckets: callBuckets,
		Help: "Time a call waited for capacity before its worker started (0 for warm calls).",
	}, []string{"machine_type"})
	m.coldSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "call_cold_start_seconds", Buckets: callBuckets,
		Help: "Time a new worker took from launch to ready (cold calls only).",
	}, []string{"machine_type"})
	m.leases = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "worker_leases_total",
		Help: "Calls given a worker: warm (an idle worker reused) or cold (a new worker started).",
	}, []string{"kind", "machine_type"})
	m.builds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "environment_builds_total",
		Help: "Environments built, by result (ok, failed).",
	}, []string{"result"})
	m.buildSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "environment_build_seconds", Buckets: buildBuckets,
		Help: "Time an environment build took, successful or not.",
	})
	m.reg.MustRegister(m.calls, m.runSeconds, m.queueSeconds, m.coldSeconds, m.leases, m.builds, m.buildSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Watch registers the gauges read from src at scrape time. Call it once,
// when the parts exist (they are made after the hooks that feed Metrics).
func (m *Metrics) Watch(src Sources) {
	m.sources = src
	m.reg.MustRegister(&stateCollector{m: m})
}

// Registry is the registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in Prometheus's exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{m.log}})
}

// WorkerLeased implements scheduler.Observer.
func (m *Metrics) WorkerLeased(machineType string, warm bool, queued, start time.Duration) {
	kind := "cold"
	if warm {
		kind = "warm"
	}
	m.leases.WithLabelValues(kind, machineType).Inc()
	m.queueSeconds.WithLabelValues(machineType).Observe(queued.Seconds())
	if !warm {
		m.coldSeconds.WithLabelValues(machineType).Observe(start.Seconds())
	}
}

// RunQueued implements server.RunObserver.
func (m *Metrics) RunQueued(state.Run) {}

// RunStarted implements server.RunObserver.
func (m *Metrics) RunStarted(state.Run) {}

// RunOutput implements server.RunObserver.
func (m *Metrics) RunOutput(state.Run, state.LogLine) {}

// RunFinished implements server.RunObserver: it counts the call by outcome
// and observes how long it ran, if a worker took it.
func (m *Metrics) RunFinished(run state.Run) {
	m.calls.WithLabelValues(string(run.Outcome), run.MachineType).Inc()
	if !run.StartedAt.IsZero() {
		m.runSeconds.WithLabelValues(run.MachineType).Observe(run.FinishedAt.Sub(run.StartedAt).Seconds())
	}
}

// OnBuild is envbuild.Options.OnBuild.
func (m *Metrics) OnBuild(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "failed"
	}
	m.builds.WithLabelValues(result).Inc()
	m.buildSeconds.Observe(took.Seconds())
}

// slogErrorLog passes promhttp's errors to the logger.
type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) { l.log.Warn("serving metrics", "err", v) }

// stateCollector reads the gauges from Sources at scrape time.
type stateCollector struct {
	m *Metrics

	mu      sync.Mutex
	usage   map[string]int64
	usageAt time.Time
}

var (
	workersDesc = prometheus.NewDesc(Namespace+"_workers", "Live workers by state (idle, busy) and machine type.",
		[]string{"state", "machine_type"}, nil)
	capacityCPUsDesc = prometheus.NewDesc(Namespace+"_capacity_cpus", "CPUs workers may reserve (total) and have reserved (used).",
		[]string{"kind"}, nil)
	capacityMemoryDesc = prometheus.NewDesc(Namespace+"_capacity_memory_bytes", "Memory workers may reserve (total) and have reserved (used).",
		[]string{"kind"}, nil)
	capacityGPUsDesc = prometheus.NewDesc(Namespace+"_capacity_gpus", "GPUs workers may reserve (total) and have reserved (used).",
		[]string{"kind"}, nil)
	queueDesc = prometheus.NewDesc(Namespace+"_queue_waiting", "Calls waiting for capacity.", nil, nil)
	envsDesc  = prometheus.NewDesc(Namespace+"_environments", "Environments built and kept.", nil, nil)
	envBytes  = prometheus.NewDesc(Namespace+"_environments_bytes", "Apparent size of the environments kept.", nil, nil)
	dataDesc  = prometheus.NewDesc(Namespace+"_data_bytes", "Bytes of regular files each account stores in /data.",
		[]string{"account"}, nil)
	quotaDesc = prometheus.NewDesc(Namespace+"_data_quota_bytes", "Each account's /data quota (absent: no quota).", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{workersDesc, capacityCPUsDesc, capacityMemoryDesc, capacityGPUsDesc, queueDesc, envsDesc, envBytes, dataDesc, quotaDesc} {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	src := c.m.sources
	if src.Workers != nil {
		type key struct{ state, machineType string }
		counts := map[key]int{}
		for _, w := range src.Workers() {
			k := key{"busy", w.Key.MachineType}
			if w.Idle {
				k.state = "idle"
			}
			counts[k]++
		}
		for k, n := range counts {
			ch <- prometheus.MustNewConstMetric(workersDesc, prometheus.GaugeValue, float64(n), k.state, k.machineType)
		}
	}
	if c := src.Capacity; c != nil {
		host, used := c.Host(), c.Used()
		ch <- prometheus.MustNewConstMetric(capacityCPUsDesc, prometheus.GaugeValue, host.CPUs, "total")
		ch <- prometheus.MustNewConstMetric(capacityCPUsDesc, prometheus.GaugeValue, used.CPUs, "used")
		ch <- prometheus.MustNewConstMetric(capacityMemoryDesc, prometheus.GaugeValue, float64(host.MemoryBytes), "total")
		ch <- prometheus.MustNewConstMetric(capacityMemoryDesc, prometheus.GaugeValue, float64(used.MemoryBytes), "used")
		ch <- prometheus.MustNewConstMetric(capacityGPUsDesc, prometheus.GaugeValue, float64(len(host.GPUs)), "total")
		ch <- prometheus.MustNewConstMetric(capacityGPUsDesc, prometheus.GaugeValue, float64(len(used.GPUs)), "used")
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(c.Waiting()))
	}
	if src.Environments != nil {
		if envs, err := src.Environments(); err != nil {
			c.m.log.Warn("metrics: listing environments", "err", err)
		} else {
			var total int64
			for _, e := range envs {
				total += e.SizeBytes
			}
			ch <- prometheus.MustNewConstMetric(envsDesc, prometheus.GaugeValue, float64(len(envs)))
			ch <- prometheus.MustNewConstMetric(envBytes, prometheus.GaugeValue, float64(total))
		}
	}
	if src.DataUsage != nil {
		for account, n := range c.dataUsage() {
			ch <- prometheus.MustNewConstMetric(dataDesc, prometheus.GaugeValue, float64(n), account)
		}
		if src.DataQuota >= 0 {
			ch <- prometheus.MustNewConstMetric(quotaDesc, prometheus.GaugeValue, float64(src.DataQuota))
		}
	}
}

// dataUsage is the accounts' /data usage, walked at most once per usageTTL.
func (c *stateCollector) dataUsage() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.usage != nil && time.Since(c.usageAt) < usageTTL {
		return c.usage
	}
	usage, err := c.m.sources.DataUsage()
	if err != nil {
		c.m.log.Warn("metrics: /data usage", "err", err)
		return c.usage
	}
	c.usage, c.usageAt = usage, time.Now()
	return usage
}
