package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

// Limits of the listings.
const (
	overviewRuns = 10
	listRuns     = 100
)

var funcs = template.FuncMap{
	"bytes": func(n int64) string { return humanize.IBytes(uint64(max(n, 0))) },
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return humanize.Time(t)
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"dict": func(kv ...any) map[string]any {
		m := make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			m[fmt.Sprint(kv[i])] = kv[i+1]
		}
		return m
	},
	"cpus": func(f float64) string { return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", f), "0"), ".") },
}

// page is what every page's template gets.
type page struct {
	Title   string
	Account string
	Admin   bool
	CSRF    string
	Data    any
}

// render writes a page; a request from the refresh script (X-Partial) gets
// only its content, which the script swaps in.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, code int, name string, s *session, data any) {
	p := page{Title: name, Data: data}
	if s != nil {
		p.Account, p.Admin, p.CSRF = s.account, s.admin, s.csrf
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	tmpl := "layout.html"
	if r.Header.Get("X-Partial") == "1" {
		tmpl = "content"
	}
	if err := d.pages[name].ExecuteTemplate(w, tmpl, p); err != nil {
		d.log.Warn("dashboard: rendering", "page", name, "err", err)
	}
}

func (d *Dashboard) fail(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrForbidden) || errors.Is(err, state.ErrNotFound) {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	d.log.Warn("dashboard", "err", err)
	http.Error(w, "internal error; see the server's log", http.StatusInternalServerError)
}

// workerView is one live worker as a page shows it.
type workerView struct {
	scheduler.WorkerInfo
	CPUs        float64
	MemoryBytes int64
	GPUs        int
	State       string
}

// visibleWorkers are the live workers the session may see.
func (d *Dashboard) visibleWorkers(s *session) []workerView {
	if d.opts.Workers == nil {
		return nil
	}
	var out []workerView
	for _, w := range d.opts.Workers() {
		if !s.admin && w.Key.Account != s.account {
			continue
		}
		v := workerView{WorkerInfo: w, State: "busy"}
		if w.Idle {
			v.State = "idle"
		}
		if t, err := d.opts.Catalog.Lookup(w.Key.MachineType); err == nil {
			v.CPUs, v.MemoryBytes, v.GPUs = t.CPUs, t.MemoryBytes, t.GPUs
		}
		out = append(out, v)
	}
	return out
}

// runView is one run as a page shows it.
type runView struct {
	state.Run
	Status   string
	Duration string
}

func viewRun(r state.Run, now time.Time) runView {
	v := runView{Run: r}
	switch {
	case r.Finished():
		v.Status = string(r.Outcome)
	case r.StartedAt.IsZero():
		v.Status = "queued"
	default:
		v.Status = "running"
	}
	from, to := r.StartedAt, r.FinishedAt
	if from.IsZero() {
		from = r.QueuedAt
	}
	if to.IsZero() {
		to = now
	}
	v.Duration = to.Sub(from).Round(time.Millisecond).String()
	return v
}

// visibleRuns are the session's runs, newest first: the run history's,
// with what the live view knows of runs it has not written yet.
func (d *Dashboard) visibleRuns(ctx context.Context, s *session, limit int) ([]runView, error) {
	accounts, err := d.accounts(ctx, s)
	if err != nil {
		return nil, err
	}
	byID := map[string]state.Run{}
	for _, a := range accounts {
		runs, err := d.opts.Store.ListRuns(ctx, a, limit)
		if err != nil {
			return nil, err
		}
		for _, r := range runs {
			byID[r.ID] = r
		}
	}
	for _, r := range d.opts.Live.Runs() {
		if s.admin || r.Account == s.account {
			byID[r.ID] = r
		}
	}
	runs := make([]state.Run, 0, len(byID))
	for _, r := range byID {
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].QueuedAt.After(runs[j].QueuedAt) })
	if len(runs) > limit {
		runs = runs[:limit]
	}
	now := time.Now()
	out := make([]runView, len(runs))
	for i, r := range runs {
		out[i] = viewRun(r, now)
	}
	return out, nil
}

// accounts are the accounts the session may see.
func (d *Dashboard) accounts(ctx context.Context, s *session) ([]string, error) {
	if !s.admin {
		return []string{s.account}, nil
	}
	return d.opts.Store.ListAccounts(ctx)
}

type capacityView struct {
	CPUs, UsedCPUs               float64
	MemoryBytes, UsedMemoryBytes int64
	GPUs, UsedGPUs               int
	Waiting                      int
}

func (d *Dashboard) capacity() *capacityView {
	c := d.opts.Capacity
	if c == nil {
		return nil
	}
	host, used := c.Host(), c.Used()
	return &capacityView{
		CPUs: host.CPUs, UsedCPUs: used.CPUs, MemoryBytes: host.MemoryBytes, UsedMemoryBytes: used.MemoryBytes,
		GPUs: len(host.GPUs), UsedGPUs: len(used.GPUs), Waiting: c.Waiting(),
	}
}

func (d *Dashboard) overview(w http.ResponseWriter, r *http.Request, s *session) {
	runs, err := d.visibleRuns(r.Context(), s, overviewRuns)
	if err != nil {
		d.fail(w, err)
		return
	}
	d.render(w, r, http.StatusOK, "overview", s, map[string]any{
		"Capacity": d.capacity(), "Workers": d.visibleWorkers(s), "Runs": runs,
	})
}

func (d *Dashboard) runs(w http.ResponseWriter, r *http.Request, s *session) {
	runs, err := d.visibleRuns(r.Context(), s, listRuns)
	if err != nil {
		d.fail(w, err)
		return
	}
	d.render(w, r, http.StatusOK, "runs", s, runs)
}

// findRun returns the run id if the session may see it: from the live view
// or from the history of one of its accounts.
func (d *Dashboard) findRun(ctx context.Context, s *session, id string) (state.Run, bool, error) {
	if snap, ok := d.opts.Live.since(id, 0); ok {
		if !s.admin && snap.run.Account != s.account {
			return state.Run{}, false, ErrForbidden
		}
		return snap.run, true, nil
	}
	accounts, err := d.accounts(ctx, s)
	if err != nil {
		return state.Run{}, false, err
	}
	for _, a := range accounts {
		run, err := d.opts.Store.GetRun(ctx, a, id)
		if err == nil {
			return run, false, nil
		}
		if !errors.Is(err, state.ErrNotFound) {
			return state.Run{}, false, err
		}
	}
	return state.Run{}, false, ErrForbidden
}

func (d *Dashboard) run(w http.ResponseWriter, r *http.Request, s *session) {
	run, _, err := d.findRun(r.Context(), s, r.PathValue("id"))
	if err != nil {
		d.fail(w, err)
		return
	}
	d.render(w, r, http.StatusOK, "run", s, viewRun(run, time.Now()))
}

// event is one server-sent event of a run's stream.
type event struct {
	Stream string `json:"stream,omitempty"`
	Data   string `json:"data,omitempty"`
	Status string `json:"status,omitempty"`
}

// runEvents streams a run's output as server-sent events: "line" events
// with the output so far and then as it is written, "status" when the run
// moves on, and "end" once it has finished.
func (d *Dashboard) runEvents(w http.ResponseWriter, r *http.Request, s *session) {
	id := r.PathValue("id")
	run, live, err := d.findRun(r.Context(), s, id)
	if err != nil {
		d.fail(w, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	send := func(name string, e event) {
		data, _ := json.Marshal(e)
		fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, data)
	}
	if !live {
		lines, err := d.opts.Store.Logs(r.Context(), run.Account, run.ID)
		if err != nil {
			d.log.Warn("dashboard: run logs", "run", id, "err", err)
		}
		for _, l := range lines {
			send("line", event{Stream: string(l.Stream), Data: l.Data})
		}
		send("end", event{Status: viewRun(run, time.Now()).Status})
		flusher.Flush()
		return
	}
	sent := 0
	status := ""
	for {
		snap, ok := d.opts.Live.since(id, sent)
		if !ok {
			// Forgotten by the live view: the history has it whole.
			send("end", event{Status: "finished"})
			flusher.Flush()
			return
		}
		// The status first: a line the page shows is never ahead of it.
		if st := viewRun(snap.run, time.Now()).Status; st != status {
			status = st
			send("status", event{Status: st})
		}
		for _, l := range snap.lines {
			send("line", event{Stream: string(l.Stream), Data: l.Data})
		}
		sent += len(snap.lines)
		if snap.run.Finished() {
			if snap.truncated {
				send("line", event{Stream: string(state.StreamSystem), Data: "[atoll: output truncated in the dashboard]\n"})
			}
			send("end", event{Status: status})
			flusher.Flush()
			return
		}
		flusher.Flush()
		select {
		case <-snap.changed:
		case <-r.Context().Done():
			return
		}
	}
}

// envView is one environment as the page shows it.
type envView struct {
	Key          string
	Python       string
	Requirements string
	SizeBytes    int64
	LastUsed     time.Time
	InUse        int
}

// environments lists the environments built: all of them for an admin,
// otherwise those the account's workers and recent runs use (an
// environment's requirements are another account's business).
func (d *Dashboard) environments(w http.ResponseWriter, r *http.Request, s *session) {
	var envs []envView
	if d.opts.Environments != nil {
		all, err := d.opts.Environments()
		if err != nil {
			d.fail(w, err)
			return
		}
		mine := map[string]bool{}
		if !s.admin {
			for _, w := range d.visibleWorkers(s) {
				mine[w.Key.EnvKey] = true
			}
			runs, err := d.visibleRuns(r.Context(), s, listRuns)
			if err != nil {
				d.fail(w, err)
				return
			}
			for _, run := range runs {
				mine[run.EnvKey] = true
			}
		}
		for _, e := range all {
			if s.admin || mine[e.Key] {
				envs = append(envs, envView{
					Key: e.Key, Python: e.Python, Requirements: strings.Join(e.Requirements, " "),
					SizeBytes: e.SizeBytes, LastUsed: e.LastUsed, InUse: e.InUse,
				})
			}
		}
		slices.SortFunc(envs, func(a, b envView) int { return b.LastUsed.Compare(a.LastUsed) })
	}
	d.render(w, r, http.StatusOK, "environments", s, envs)
}
