package serverapp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/atoll-dev/atoll/internal/dashboard"
	"github.com/atoll-dev/atoll/internal/metrics"
	"github.com/atoll-dev/atoll/internal/server"
	"github.com/atoll-dev/atoll/internal/state"
)

// DefaultDashboard is the dashboard's address in the documentation's
// examples: beside the API's port, loopback only.
const DefaultDashboard = "127.0.0.1:28656"

// openMetrics makes the metrics and the dashboard's live view of runs when
// a dashboard is asked for, before the parts that feed them are made.
func (a *app) openMetrics(context.Context) error {
	if a.cfg.Dashboard == "" {
		return nil
	}
	if err := CheckListen(a.cfg.Dashboard, a.cfg.Insecure || a.cfg.TLSCert != ""); err != nil {
		return fmt.Errorf("--dashboard: %w", err)
	}
	a.metrics = metrics.New(a.log.With("component", "metrics"))
	a.live = dashboard.NewLive()
	return nil
}

// historyOptions has the metrics and the live view follow every run.
func (a *app) historyOptions() []server.HistoryOption {
	if a.metrics == nil {
		return nil
	}
	return []server.HistoryOption{server.WithRunObserver(runObservers{a.metrics, a.live})}
}

// runObservers passes each run event to every observer in turn.
type runObservers []server.RunObserver

func (o runObservers) RunQueued(r state.Run) {
	for _, x := range o {
		x.RunQueued(r)
	}
}

func (o runObservers) RunStarted(r state.Run) {
	for _, x := range o {
		x.RunStarted(r)
	}
}

func (o runObservers) RunOutput(r state.Run, l state.LogLine) {
	for _, x := range o {
		x.RunOutput(r, l)
	}
}

func (o runObservers) RunFinished(r state.Run) {
	for _, x := range o {
		x.RunFinished(r)
	}
}

// startDashboard serves the dashboard and /metrics on their own port.
func (a *app) startDashboard(context.Context) error {
	if a.metrics == nil {
		return nil
	}
	a.metrics.Watch(metrics.Sources{
		Workers:      a.sched.Workers,
		Capacity:     a.capacity,
		Environments: a.builder.List,
		DataUsage:    a.dataStore.Usages,
		DataQuota:    a.dataStore.Quota(),
	})
	token, err := metricsToken(a.cfg.MetricsTokenFile)
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(a.cfg.Dashboard)
	h, err := dashboard.New(dashboard.Options{
		Keys:          a.authn,
		Store:         a.store,
		Live:          a.live,
		AdminAccounts: a.cfg.DashboardAdmins,
		Workers:       a.sched.Workers,
		Catalog:       a.catalog,
		Capacity:      a.capacity,
		Environments:  a.builder.List,
		Metrics:       a.metrics.Handler(),
		MetricsToken:  token,
		Secure:        a.cfg.TLSCert != "",
		Loopback:      loopbackHost(host),
		Logger:        a.log.With("component", "dashboard"),
	})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", a.cfg.Dashboard)
	if err != nil {
		return fmt.Errorf("--dashboard: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.With("component", "dashboard").Handler(), slog.LevelWarn),
	}
	if a.cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.TLSCert, a.cfg.TLSKey)
		if err != nil {
			lis.Close()
			return fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		lis = tls.NewListener(lis, srv.TLSConfig)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Warn("dashboard stopped", "err", err)
		}
	}()
	a.undo = append(a.undo, func() {
		// Event streams of runs in flight would hold Shutdown: close them.
		_ = srv.Close()
		<-done
	})
	scheme := "http"
	if a.cfg.TLSCert != "" {
		scheme = "https"
	}
	a.log.Info("dashboard listening", "url", fmt.Sprintf("%s://%s/", scheme, lis.Addr()), "metrics_token", token != "")
	return nil
}

func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// metricsToken reads --metrics-token-file: the token /metrics then asks for.
func metricsToken(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--metrics-token-file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("--metrics-token-file %s is empty", path)
	}
	return token, nil
}
