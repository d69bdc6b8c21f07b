package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

// fakeKeys knows one secret per key id.
type fakeKeys map[string]auth.Principal

func (k fakeKeys) Verify(_ context.Context, id, secret string) (auth.Principal, error) {
	p, ok := k[id+":"+secret]
	if !ok {
		return auth.Principal{}, auth.ErrUnauthenticated
	}
	return p, nil
}

// fakeStore is an in-memory run history.
type fakeStore struct {
	mu      sync.Mutex
	runs    []state.Run
	logs    map[string][]state.LogLine
	revoked map[string]bool
}

func (s *fakeStore) ListAccounts(context.Context) ([]string, error) {
	return []string{"alice", "bob", "ops"}, nil
}

func (s *fakeStore) ListRuns(_ context.Context, account string, limit int) ([]state.Run, error) {
	var out []state.Run
	for _, r := range s.runs {
		if r.Account == account {
			out = append(out, r)
		}
	}
	return out, nil
}

func (s *fakeStore) GetRun(_ context.Context, account, id string) (state.Run, error) {
	for _, r := range s.runs {
		if r.ID == id && r.Account == account {
			return r, nil
		}
	}
	return state.Run{}, state.ErrNotFound
}

func (s *fakeStore) Logs(_ context.Context, account, id string) ([]state.LogLine, error) {
	return s.logs[id], nil
}

func (s *fakeStore) KeyByID(_ context.Context, id string) (state.Key, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := state.Key{ID: id}
	if s.revoked[id] {
		k.RevokedAt = time.Now()
	}
	return k, nil
}

func newTestDashboard(t *testing.T) (*httptest.Server, *fakeStore, *Live) {
	t.Helper()
	now := time.Now()
	store := &fakeStore{
		runs: []state.Run{
			{ID: "r-alice", Account: "alice", Function: "f", MachineType: "XS", QueuedAt: now, StartedAt: now, FinishedAt: now, Outcome: state.OutcomeOK},
			{ID: "r-bob", Account: "bob", Function: "g", MachineType: "S", QueuedAt: now, StartedAt: now, FinishedAt: now, Outcome: state.OutcomeError},
		},
		logs:    map[string][]state.LogLine{"r-alice": {{Stream: state.StreamStdout, Data: "alice's output\n"}}},
		revoked: map[string]bool{},
	}
	live := NewLive()
	d, err := New(Options{
		Keys: fakeKeys{
			"ak_alice:s1": {Account: "alice", KeyID: "ak_alice"},
			"ak_bob:s2":   {Account: "bob", KeyID: "ak_bob"},
			"ak_ops:s3":   {Account: "ops", KeyID: "ak_ops"},
		},
		Store:         store,
		Live:          live,
		AdminAccounts: []string{"ops"},
		Catalog:       machine.Defaults(),
		Capacity:      machine.NewCapacity(machine.Host{CPUs: 2, MemoryBytes: 4 << 30}),
		Workers: func() []scheduler.WorkerInfo {
			return []scheduler.WorkerInfo{{ID: "w-alice", Key: scheduler.PoolKey{Account: "alice", Function: "f", MachineType: "XS"}, Started: now}}
		},
		Loopback: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	t.Cleanup(srv.Close)
	return srv, store, live
}

// client logs in with key id and secret through the login form; it fails
// the test unless the login's outcome is want.
func client(t *testing.T, srv *httptest.Server, id, secret string, want int) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(srv.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	token := strings.SplitN(strings.SplitN(string(page), `name="token" value="`, 2)[1], `"`, 2)[0]
	resp, err = c.PostForm(srv.URL+"/login", url.Values{"token": {token}, "key_id": {id}, "key_secret": {secret}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		t.Fatalf("login as %s: status %d, want %d", id, resp.StatusCode, want)
	}
	return c
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestWhoSeesWhat(t *testing.T) {
	srv, _, _ := newTestDashboard(t)
	tests := []struct {
		name, id, secret string
		page             string
		wantCode         int
		want, wantNot    []string
	}{
		{"own runs", "ak_alice", "s1", "/runs", 200, []string{"r-alice"}, []string{"r-bob"}},
		{"own workers", "ak_alice", "s1", "/", 200, []string{"w-alice"}, nil},
		{"other's workers", "ak_bob", "s2", "/", 200, []string{"No live workers"}, []string{"w-alice"}},
		{"other's run", "ak_bob", "s2", "/runs/r-alice", 404, nil, []string{"alice"}},
		{"other's log", "ak_bob", "s2", "/runs/r-alice/events", 404, nil, []string{"alice's output"}},
		{"own log", "ak_alice", "s1", "/runs/r-alice/events", 200, []string{"alice's output", "event: end"}, nil},
		{"admin sees all", "ak_ops", "s3", "/runs", 200, []string{"r-alice", "r-bob", "admin"}, nil},
		{"admin reads any log", "ak_ops", "s3", "/runs/r-alice/events", 200, []string{"alice's output"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := client(t, srv, tt.id, tt.secret, http.StatusSeeOther)
			code, body := get(t, c, srv.URL+tt.page)
			if code != tt.wantCode {
				t.Fatalf("GET %s: %d, want %d", tt.page, code, tt.wantCode)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("GET %s lacks %q", tt.page, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("GET %s shows %q", tt.page, w)
				}
			}
		})
	}
}

func TestLoginRefusals(t *testing.T) {
	srv, store, _ := newTestDashboard(t)
	client(t, srv, "ak_alice", "wrong", http.StatusUnauthorized)
	client(t, srv, "", "", http.StatusUnauthorized)
	anon := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code, _ := get(t, anon, srv.URL+"/runs"); code != http.StatusSeeOther {
		t.Errorf("anonymous /runs: %d, want a redirect to the login", code)
	}
	if code, _ := get(t, anon, srv.URL+"/runs/r-alice/events"); code != http.StatusUnauthorized {
		t.Errorf("anonymous event stream: %d, want 401", code)
	}

	c := client(t, srv, "ak_alice", "s1", http.StatusSeeOther)
	if code, _ := get(t, c, srv.URL+"/"); code != 200 {
		t.Fatalf("logged in: %d", code)
	}
	store.mu.Lock()
	store.revoked["ak_alice"] = true
	store.mu.Unlock()
	if code, _ := get(t, c, srv.URL+"/"); code != http.StatusSeeOther {
		t.Errorf("after revoking the key: %d, want a redirect to the login", code)
	}
}

func TestRebindingRefused(t *testing.T) {
	srv, _, _ := newTestDashboard(t)
	req, _ := http.NewRequest("GET", srv.URL+"/login", nil)
	req.Host = "attacker.example"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("Host attacker.example: %d, want 421", resp.StatusCode)
	}
}

func TestSessionExpires(t *testing.T) {
	s := newSessions(time.Hour)
	now := time.Now()
	s.now = func() time.Time { return now }
	id, _ := s.create("alice", "ak_alice", false)
	if s.get(id) == nil {
		t.Fatal("a new session is not found")
	}
	if s.get(id+"x") != nil || s.get("") != nil {
		t.Error("an unknown cookie finds a session")
	}
	now = now.Add(time.Hour)
	if s.get(id) != nil {
		t.Error("an expired session is still found")
	}
}

func TestLiveStreamsOutputAsItComes(t *testing.T) {
	srv, _, live := newTestDashboard(t)
	c := client(t, srv, "ak_alice", "s1", http.StatusSeeOther)
	run := state.Run{ID: "r-live", Account: "alice", MachineType: "XS", QueuedAt: time.Now()}
	live.RunQueued(run)
	run.StartedAt = time.Now()
	live.RunStarted(run)
	live.RunOutput(run, state.LogLine{Stream: state.StreamStdout, Data: "one\n"})

	resp, err := c.Get(srv.URL + "/runs/r-live/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "data: ") {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10 s")
		}
		return ""
	}
	for _, want := range []string{`"status":"running"`, `"data":"one\n"`} {
		if got := next(); !strings.Contains(got, want) {
			t.Fatalf("event %s, want %s", got, want)
		}
	}
	live.RunOutput(run, state.LogLine{Stream: state.StreamStderr, Data: "two\n"})
	if got := next(); !strings.Contains(got, `"stream":"stderr","data":"two\n"`) {
		t.Fatalf("event %s, want the second line", got)
	}
	run.FinishedAt, run.Outcome = time.Now(), state.OutcomeOK
	live.RunFinished(run)
	for _, want := range []string{`"status":"ok"`, `"status":"ok"`} {
		if got := next(); !strings.Contains(got, want) {
			t.Fatalf("event %s, want %s", got, want)
		}
	}
	if _, ok := <-lines; ok {
		t.Error("the stream did not end with the run")
	}
}

func TestLiveForgetsOldRuns(t *testing.T) {
	l := NewLive()
	now := time.Now()
	l.now = func() time.Time { return now }
	for i := range liveKeepRuns + 10 {
		run := state.Run{ID: fmt.Sprintf("r-%d", i), QueuedAt: now}
		l.RunQueued(run)
		run.FinishedAt, run.Outcome = now, state.OutcomeOK
		l.RunFinished(run)
	}
	l.RunQueued(state.Run{ID: "r-running", QueuedAt: now})
	if got := len(l.Runs()); got != liveKeepRuns+1 {
		t.Errorf("%d runs held, want the last %d finished ones and the running one", got, liveKeepRuns)
	}
	if _, ok := l.since("r-0", 0); ok {
		t.Error("the oldest finished run is still held")
	}
	now = now.Add(liveKeep + time.Second)
	l.RunQueued(state.Run{ID: "r-next", QueuedAt: now})
	if got := len(l.Runs()); got != 2 {
		t.Errorf("%d runs held after liveKeep, want the two unfinished ones", got)
	}
}
