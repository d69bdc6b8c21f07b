// Package dashboard owns the web dashboard of `atoll server` (--dashboard):
// an HTTP server, apart from the gRPC API, that shows live workers, runs
// with their output streaming as it is written, environments, capacity and
// the queue, and serves Prometheus's /metrics. Pages are Go html/template
// with embedded static files; a little JavaScript refreshes them and
// streams logs over server-sent events.
//
// Visitors log in with an API key, checked by internal/auth; a login is a
// server-side session behind an HttpOnly, SameSite=Strict cookie (Secure
// under TLS) that never holds the key, ends when it expires or its key is
// revoked, and whose state-changing forms carry a CSRF token. A session
// sees its own account; a key of an admin account (Options.AdminAccounts)
// sees every account.
//
// It only reads: it must not start, stop or change workers, runs, keys or
// data, and it never decides how a key verifies (auth does).
package dashboard

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/envbuild"
	"github.com/atoll-dev/atoll/internal/machine"
	"github.com/atoll-dev/atoll/internal/scheduler"
	"github.com/atoll-dev/atoll/internal/state"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Cookie names.
const (
	sessionCookie = "atoll_session"
	// loginCookie carries the token the login form must echo, so that
	// another site cannot log a visitor in with its own key.
	loginCookie = "atoll_login"
)

// maxFormBytes bounds a form's body: a key id and secret are short.
const maxFormBytes = 8 << 10

// KeyVerifier checks an API key; *auth.Authenticator is one.
type KeyVerifier interface {
	Verify(ctx context.Context, id, secret string) (auth.Principal, error)
}

// Store is the run history and key records the dashboard reads;
// *state.Store is one.
type Store interface {
	ListAccounts(ctx context.Context) ([]string, error)
	ListRuns(ctx context.Context, account string, limit int) ([]state.Run, error)
	GetRun(ctx context.Context, account, id string) (state.Run, error)
	Logs(ctx context.Context, account, runID string) ([]state.LogLine, error)
	KeyByID(ctx context.Context, id string) (state.Key, error)
}

// Options configures the dashboard.
type Options struct {
	Keys  KeyVerifier
	Store Store
	// Live follows runs in flight; the run history must report to it.
	Live *Live
	// AdminAccounts are the accounts whose keys see every account.
	AdminAccounts []string
	Workers       func() []scheduler.WorkerInfo
	Catalog       machine.Catalog
	Capacity      *machine.Capacity
	Environments  func() ([]envbuild.Info, error)
	// Metrics, if set, is served at /metrics, to anyone who reaches the
	// port unless MetricsToken is set.
	Metrics http.Handler
	// MetricsToken, if set, must come as "Authorization: Bearer TOKEN".
	MetricsToken string
	// Secure marks cookies Secure: set it when serving TLS.
	Secure bool
	// Loopback restricts the Host header to loopback names, so that a web
	// page whose name rebinds to 127.0.0.1 cannot read /metrics.
	Loopback   bool
	SessionTTL time.Duration
	Logger     *slog.Logger
}

// Dashboard is the dashboard's HTTP handler.
type Dashboard struct {
	opts     Options
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	mux      *http.ServeMux
	// crossOrigin refuses state-changing requests other sites' pages make.
	crossOrigin *http.CrossOriginProtection
}

// New returns the dashboard.
func New(opts Options) (*Dashboard, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Live == nil {
		opts.Live = NewLive()
	}
	d := &Dashboard{opts: opts, log: opts.Logger, sessions: newSessions(opts.SessionTTL), pages: map[string]*template.Template{},
		crossOrigin: http.NewCrossOriginProtection()}
	for _, page := range []string{"login", "overview", "runs", "run", "environments"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/runtable.html", "templates/"+page+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: template %s: %w", page, err)
		}
		d.pages[page] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", d.loginPage)
	mux.HandleFunc("POST /login", d.login)
	mux.HandleFunc("POST /logout", d.authed(d.logout))
	mux.HandleFunc("GET /{$}", d.authed(d.overview))
	mux.HandleFunc("GET /runs", d.authed(d.runs))
	mux.HandleFunc("GET /runs/{id}", d.authed(d.run))
	mux.HandleFunc("GET /runs/{id}/events", d.authed(d.runEvents))
	mux.HandleFunc("GET /environments", d.authed(d.environments))
	if opts.Metrics != nil {
		mux.Handle("GET /metrics", d.metrics(opts.Metrics))
	}
	d.mux = mux
	return d, nil
}

// ServeHTTP implements http.Handler.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if d.opts.Loopback && !loopbackHost(r.Host) {
		http.Error(w, "this dashboard answers only to a loopback host name", http.StatusMisdirectedRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	// same-origin, not no-referrer: with no-referrer, browsers send
	// "Origin: null" on the dashboard's own form posts.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	d.mux.ServeHTTP(w, r)
}

func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (d *Dashboard) metrics(h http.Handler) http.Handler {
	if d.opts.MetricsToken == "" {
		return h
	}
	want := []byte("Bearer " + d.opts.MetricsToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="atoll metrics"`)
			http.Error(w, "metrics need the metrics token: Authorization: Bearer TOKEN", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a POST comes from a page of this dashboard,
// as the browser tells (Sec-Fetch-Site, else Origin against Host); a
// request that says neither is no browser's, and the forms' CSRF tokens
// still apply to it.
func (d *Dashboard) sameOrigin(r *http.Request) bool {
	return d.crossOrigin.Check(r) == nil
}

func (d *Dashboard) setCookie(w http.ResponseWriter, name, value string, maxAge time.Duration) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: int(maxAge.Seconds()),
		HttpOnly: true, Secure: d.opts.Secure, SameSite: http.SameSiteStrictMode,
	})
}

func (d *Dashboard) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, Secure: d.opts.Secure, SameSite: http.SameSiteStrictMode,
	})
}

type loginView struct {
	Token string
	Error string
	KeyID string
}

func (d *Dashboard) loginPage(w http.ResponseWriter, r *http.Request) {
	d.showLogin(w, r, http.StatusOK, loginView{})
}

func (d *Dashboard) showLogin(w http.ResponseWriter, r *http.Request, code int, v loginView) {
	v.Token = randomToken()
	d.setCookie(w, loginCookie, v.Token, 10*time.Minute)
	d.render(w, r, code, "login", nil, v)
}

// login checks the key of the form and starts a session.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	c, err := r.Cookie(loginCookie)
	if !d.sameOrigin(r) || err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue("token"))) != 1 {
		d.showLogin(w, r, http.StatusForbidden, loginView{Error: "The login form expired; log in again."})
		return
	}
	keyID := strings.TrimSpace(r.PostFormValue("key_id"))
	p, err := d.opts.Keys.Verify(r.Context(), keyID, strings.TrimSpace(r.PostFormValue("key_secret")))
	if err != nil || p.KeyID == "" {
		if err != nil && !errors.Is(err, auth.ErrUnauthenticated) {
			d.log.Warn("dashboard login", "err", err)
		}
		d.log.Info("dashboard login refused", "remote", r.RemoteAddr)
		d.showLogin(w, r, http.StatusUnauthorized, loginView{Error: "Wrong key id or secret.", KeyID: keyID})
		return
	}
	id, _ := d.sessions.create(p.Account, p.KeyID, slices.Contains(d.opts.AdminAccounts, p.Account))
	d.clearCookie(w, loginCookie)
	d.setCookie(w, sessionCookie, id, d.opts.SessionTTL)
	d.log.Info("dashboard login", "account", p.Account, "key", p.KeyID)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (d *Dashboard) logout(w http.ResponseWriter, r *http.Request, s *session) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil || !d.sameOrigin(r) ||
		subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(s.csrf)) != 1 {
		http.Error(w, "this form did not come from this dashboard", http.StatusForbidden)
		return
	}
	if c, err := r.Cookie(sessionCookie); err == nil {
		d.sessions.end(c.Value)
	}
	d.clearCookie(w, sessionCookie)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// authed runs h with the request's session, or sends the visitor to the
// login page (event streams get 401: EventSource cannot follow a login).
func (d *Dashboard) authed(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.session(r)
		if err != nil {
			if strings.HasSuffix(r.URL.Path, "/events") || r.Method != http.MethodGet {
				http.Error(w, "log in first", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/login", http.StatusSeeOther)
			return
		}
		h(w, r, s)
	}
}

// session returns the request's live session: its cookie names one that
// has not expired and whose key is not revoked.
func (d *Dashboard) session(r *http.Request) (*session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, ErrNoSession
	}
	s := d.sessions.get(c.Value)
	if s == nil {
		return nil, ErrNoSession
	}
	k, err := d.opts.Store.KeyByID(r.Context(), s.keyID)
	if err != nil || k.Revoked() {
		d.sessions.end(c.Value)
		return nil, ErrNoSession
	}
	return s, nil
}
