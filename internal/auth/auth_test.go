package auth_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/atoll-dev/atoll/internal/auth"
	"github.com/atoll-dev/atoll/internal/state"
)

var _ auth.KeyStore = (*state.Store)(nil)

// clock is a settable time source shared by the store and the authenticator.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	auth  *auth.Authenticator
	store *state.Store
	path  string
	clock *clock
}

func newFixture(t testing.TB, opts ...auth.Option) *fixture {
	t.Helper()
	c := &clock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := state.Open(context.Background(), path, state.WithClock(c.now))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	a := auth.New(st, append([]auth.Option{auth.WithClock(c.now)}, opts...)...)
	return &fixture{auth: a, store: st, path: path, clock: c}
}

func (f *fixture) createKey(t testing.TB, account string) (id, secret string) {
	t.Helper()
	id, secret, err := f.auth.CreateKey(context.Background(), account, "test")
	if err != nil {
		t.Fatalf("CreateKey(%q): %v", account, err)
	}
	return id, secret
}

func TestNewKeyFormat(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		id, secret := auth.NewKey()
		if !strings.HasPrefix(id, "ak_") || len(id) != 19 || strings.Trim(id[3:], "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("id %q: want ak_ and 16 lowercase base32 characters", id)
		}
		raw, err := base64.RawURLEncoding.DecodeString(secret)
		if err != nil || len(raw) != 32 {
			t.Fatalf("secret %q: want 32 bytes base64url, got %d bytes, %v", secret, len(raw), err)
		}
		if seen[id] || seen[secret] {
			t.Fatalf("repeated id or secret after %d keys", len(seen)/2)
		}
		seen[id], seen[secret] = true, true
	}
}

func TestVerifyKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	otherID, otherSecret := f.createKey(t, "bob")
	unknownID, _ := auth.NewKey()

	for _, tc := range []struct {
		name       string
		id, secret string
		want       auth.Principal
		wantErr    bool
	}{
		{name: "valid", id: id, secret: secret, want: auth.Principal{Account: "alice", KeyID: id}},
		{name: "other valid", id: otherID, secret: otherSecret, want: auth.Principal{Account: "bob", KeyID: otherID}},
		{name: "wrong secret", id: id, secret: secret + "x", wantErr: true},
		{name: "another key's secret", id: id, secret: otherSecret, wantErr: true},
		{name: "empty secret", id: id, secret: "", wantErr: true},
		{name: "unknown id", id: unknownID, secret: secret, wantErr: true},
		{name: "malformed id", id: "ak_'; DROP TABLE keys;--", secret: secret, wantErr: true},
		{name: "nothing", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.auth.Verify(ctx, tc.id, tc.secret)
			if tc.wantErr {
				if !errors.Is(err, auth.ErrUnauthenticated) {
					t.Fatalf("Verify = %+v, %v; want ErrUnauthenticated", got, err)
				}
				if !strings.Contains(err.Error(), "atoll keys create") {
					t.Errorf("message %q does not say how to get a key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Principal (-want +got):\n%s", diff)
			}
		})
	}
}

// An unknown id, a wrong secret and a revoked key must read the same, or a
// caller could probe which key ids exist.
func TestVerifyDoesNotRevealKeyExistence(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	revokedID, revokedSecret := f.createKey(t, "alice")
	if err := f.auth.Revoke(ctx, revokedID); err != nil {
		t.Fatal(err)
	}
	unknownID, _ := auth.NewKey()
	_, errWrong := f.auth.Verify(ctx, id, "nope")
	_, errUnknown := f.auth.Verify(ctx, unknownID, secret)
	_, errRevoked := f.auth.Verify(ctx, revokedID, revokedSecret)
	if errWrong.Error() != errUnknown.Error() || errWrong.Error() != errRevoked.Error() {
		t.Errorf("messages differ:\nwrong secret: %v\nunknown id:   %v\nrevoked:      %v", errWrong, errUnknown, errRevoked)
	}
	if strings.Contains(errUnknown.Error(), unknownID) {
		t.Errorf("message %q echoes the key id", errUnknown)
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	keepID, keepSecret := f.createKey(t, "alice")

	// Verify a few times first, so the key is in the verified cache when it
	// is revoked.
	for range 3 {
		if _, err := f.auth.Verify(ctx, id, secret); err != nil {
			t.Fatalf("Verify before revoke: %v", err)
		}
	}
	if err := f.auth.Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.auth.Verify(ctx, id, secret); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("Verify after revoke = %v, want ErrUnauthenticated", err)
	}
	if _, err := f.auth.Verify(ctx, keepID, keepSecret); err != nil {
		t.Errorf("other key after revoke: %v", err)
	}
	if err := f.auth.Revoke(ctx, id); err != nil {
		t.Errorf("second Revoke = %v, want success", err)
	}
	unknownID, _ := auth.NewKey()
	if err := f.auth.Revoke(ctx, unknownID); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Revoke(unknown) = %v, want state.ErrNotFound", err)
	}
}

// `atoll keys revoke` run on the server host may write the database from
// another process, behind the running server's back: the server notices
// once its verified entry expires, or at once with no caching.
func TestRevokeByAnotherProcess(t *testing.T) {
	for _, tc := range []struct {
		name string
		ttl  time.Duration
	}{
		{"cached", 5 * time.Second},
		{"uncached", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, auth.WithVerifiedTTL(tc.ttl))
			id, secret := f.createKey(t, "alice")
			for range 3 {
				if _, err := f.auth.Verify(ctx, id, secret); err != nil {
					t.Fatalf("Verify before revoke: %v", err)
				}
			}
			cli, err := state.Open(ctx, f.path)
			if err != nil {
				t.Fatal(err)
			}
			if err := auth.New(cli).Revoke(ctx, id); err != nil {
				t.Fatal(err)
			}
			cli.Close()

			f.clock.advance(tc.ttl - time.Millisecond)
			_, err = f.auth.Verify(ctx, id, secret)
			if tc.ttl > 0 && err != nil {
				t.Errorf("Verify within the TTL = %v, want the cached success", err)
			}
			f.clock.advance(time.Millisecond)
			if _, err := f.auth.Verify(ctx, id, secret); !errors.Is(err, auth.ErrUnauthenticated) {
				t.Errorf("Verify once the TTL is over = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

// A cached key must still refuse any secret but its own.
func TestVerifiedCacheNeedsTheSecret(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	if _, err := f.auth.Verify(ctx, id, secret); err != nil {
		t.Fatal(err)
	}
	for _, wrong := range []string{"", "x", secret[:len(secret)-1], secret + "x"} {
		if _, err := f.auth.Verify(ctx, id, wrong); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("Verify(cached id, %q) = %v, want ErrUnauthenticated", wrong, err)
		}
	}
}

func TestSecretNotStoredInClear(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	if _, err := f.auth.Verify(ctx, id, secret); err != nil {
		t.Fatal(err)
	}
	// Read the database with its write-ahead log: recent writes may be only
	// in the WAL.
	var all []byte
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(f.path + suffix)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	if !bytes.Contains(all, []byte(id)) {
		t.Fatalf("key id %q not found in the database files: the test is not reading them", id)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(secret)
	if bytes.Contains(all, []byte(secret)) || bytes.Contains(all, raw) {
		t.Errorf("the secret is in the database in clear")
	}
}

func TestCreateKey(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	if _, _, err := f.auth.CreateKey(ctx, "bad/name", ""); !errors.Is(err, state.ErrInvalidName) {
		t.Errorf("CreateKey(bad/name) = %v, want state.ErrInvalidName", err)
	}
	id1, _ := f.createKey(t, "alice")
	f.clock.advance(time.Second)
	id2, _ := f.createKey(t, "alice") // the account already exists now
	f.clock.advance(time.Second)
	id3, _ := f.createKey(t, "bob")
	if err := f.auth.Revoke(ctx, id2); err != nil {
		t.Fatal(err)
	}

	all, err := f.auth.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := []auth.KeyInfo{
		{ID: id1, Account: "alice", Label: "test", Created: t0},
		{ID: id2, Account: "alice", Label: "test", Created: t0.Add(time.Second), RevokedAt: t0.Add(2 * time.Second)},
		{ID: id3, Account: "bob", Label: "test", Created: t0.Add(2 * time.Second)},
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("List(all) (-want +got):\n%s", diff)
	}
	bobs, err := f.auth.List(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want[2:], bobs); diff != "" {
		t.Errorf("List(bob) (-want +got):\n%s", diff)
	}
}

func TestLastUsedIsThrottled(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id, secret := f.createKey(t, "alice")
	lastUsed := func() time.Time {
		t.Helper()
		k, err := f.store.KeyByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return k.LastUsed
	}
	verify := func() {
		t.Helper()
		if _, err := f.auth.Verify(ctx, id, secret); err != nil {
			t.Fatal(err)
		}
	}
	first := f.clock.now()
	verify()
	if got := lastUsed(); !got.Equal(first) {
		t.Fatalf("LastUsed after first use = %v, want %v", got, first)
	}
	f.clock.advance(30 * time.Second)
	verify()
	if got := lastUsed(); !got.Equal(first) {
		t.Errorf("LastUsed written again within the interval: %v", got)
	}
	f.clock.advance(31 * time.Second)
	verify()
	if got := lastUsed(); !got.Equal(f.clock.now()) {
		t.Errorf("LastUsed after the interval = %v, want %v", got, f.clock.now())
	}
}

func TestWorkerTokens(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	_, aliceSecret := f.createKey(t, "alice")

	tokA := f.auth.IssueWorkerToken("alice", "w-a")
	tokB := f.auth.IssueWorkerToken("bob", "w-b")
	if tokA == tokB || tokA == aliceSecret || !strings.HasPrefix(tokA, "awt_") {
		t.Fatalf("tokens %q, %q: want distinct awt_ tokens unrelated to keys", tokA, tokB)
	}
	for _, tc := range []struct {
		token string
		want  auth.Principal
	}{
		{tokA, auth.Principal{Account: "alice", WorkerID: "w-a"}},
		{tokB, auth.Principal{Account: "bob", WorkerID: "w-b"}},
	} {
		got, err := f.auth.Verify(ctx, "", tc.token)
		if err != nil {
			t.Fatalf("Verify(%s's token): %v", tc.want.Account, err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("Principal (-want +got):\n%s", diff)
		}
	}

	// The worker is gone: its token stops working, the other worker's not.
	f.auth.RevokeWorkerToken("w-a")
	if _, err := f.auth.Verify(ctx, "", tokA); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("revoked token: %v, want ErrUnauthenticated", err)
	}
	if _, err := f.auth.Verify(ctx, "", tokB); err != nil {
		t.Errorf("bob's token after alice's worker stopped: %v", err)
	}
	f.auth.RevokeWorkerToken("w-a")       // twice
	f.auth.RevokeWorkerToken("w-unknown") // never issued

	// A reissued token replaces the worker's earlier one.
	old := f.auth.IssueWorkerToken("carol", "w-c")
	renewed := f.auth.IssueWorkerToken("carol", "w-c")
	if _, err := f.auth.Verify(ctx, "", old); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("replaced token: %v, want ErrUnauthenticated", err)
	}
	if _, err := f.auth.Verify(ctx, "", renewed); err != nil {
		t.Errorf("renewed token: %v", err)
	}

	for _, bogus := range []string{"awt_nope", tokA + "x", aliceSecret} {
		if _, err := f.auth.Verify(ctx, "", bogus); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("Verify(\"\", %q) = %v, want ErrUnauthenticated", bogus, err)
		}
	}
}

// failingStore is a KeyStore whose database is broken.
type failingStore struct{ auth.KeyStore }

var errDiskOnFire = errors.New("disk on fire")

func (failingStore) KeyByID(context.Context, string) (state.Key, error) {
	return state.Key{}, errDiskOnFire
}

func TestVerifyStoreFailureIsNotUnauthenticated(t *testing.T) {
	a := auth.New(failingStore{})
	id, secret := auth.NewKey()
	_, err := a.Verify(context.Background(), id, secret)
	if !errors.Is(err, errDiskOnFire) || errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("Verify with a broken store = %v, want the store's error, not ErrUnauthenticated", err)
	}
}
