// Package auth decides who is calling: it creates and checks API keys (whose
// secrets are stored only as hashes, through internal/state), issues the
// scoped tokens that let a worker call back on behalf of its account,
// checks the kernel's peer credentials of unix-socket callers (host=local's
// supervisor, peer.go), and provides the gRPC tap and interceptors that
// put the caller's Principal in the request context: the tap decides from
// a call's headers, before its message is read, and keeps worker tokens to
// their scope (WorkerTokenScope).
//
// It answers "who", never "may they": what a principal may touch (its own
// runs, workers and data) is checked by the services that own those things.
// Its error messages go to callers as they are, so they never reveal whether
// a key id exists.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/atoll-dev/atoll/internal/state"
)

// Principal is an authenticated caller. Exactly one of KeyID, WorkerID and
// PeerPID is set: KeyID for a caller with an API key, WorkerID for a
// function running in that worker calling back (a nested call), PeerPID for
// a process of this machine's user on the host=local supervisor's socket.
type Principal struct {
	Account  string
	KeyID    string
	WorkerID string
	PeerPID  int
}

// DefaultAccount is the account keys act for unless told otherwise.
const DefaultAccount = "default"

// KeyStore is the storage the Authenticator needs; *state.Store is one.
type KeyStore interface {
	EnsureAccount(ctx context.Context, name string) (state.Account, error)
	InsertKey(ctx context.Context, k state.Key) error
	KeyByID(ctx context.Context, id string) (state.Key, error)
	ListKeys(ctx context.Context, account string) ([]state.Key, error)
	RevokeKey(ctx context.Context, id string) error
	TouchKey(ctx context.Context, id string) error
}

// Authenticator checks API keys against a KeyStore and worker tokens
// against its own memory. It is safe for concurrent use.
//
// A key that verified is remembered for a short time (WithVerifiedTTL) so
// that a busy client does not pay a database lookup on every call: in a
// gRPC handler that lookup costs tens of microseconds, most of it growing
// the fresh goroutine's stack for the SQLite engine (see BenchmarkVerify and
// BenchmarkRoundTrip). Revoke forgets the key at once; a revocation written
// to the database by another process is noticed when the entry expires.
type Authenticator struct {
	store       KeyStore
	log         *slog.Logger
	now         func() time.Time
	touchEvery  time.Duration
	verifiedTTL time.Duration

	mu sync.Mutex
	// verified holds keys that verified recently, by id.
	verified map[string]verifiedKey
	// revocations counts Revoke calls, so a Verify that read the key
	// before a concurrent Revoke does not cache it afterwards.
	revocations uint64
	// touched is when each key's last-used time was last written.
	touched map[string]time.Time

	workers workerTokens
}

type verifiedKey struct {
	hash    []byte
	account string
	expires time.Time
}

// Option configures New.
type Option func(*Authenticator)

// WithLogger sets the logger; by default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	return func(a *Authenticator) { a.log = l }
}

// WithClock replaces time.Now for throttling last-used updates. Tests use it.
func WithClock(now func() time.Time) Option {
	return func(a *Authenticator) { a.now = now }
}

// WithTouchInterval sets how often at most a key's last-used time is
// written (default one minute). Writing it on every call would put a
// database write on every RPC.
func WithTouchInterval(d time.Duration) Option {
	return func(a *Authenticator) { a.touchEvery = d }
}

// WithVerifiedTTL sets how long a verified key is trusted without looking
// it up again (default DefaultVerifiedTTL; 0 looks it up on every call).
// It bounds how late a revocation made by another process is noticed.
func WithVerifiedTTL(d time.Duration) Option {
	return func(a *Authenticator) { a.verifiedTTL = d }
}

// DefaultVerifiedTTL is the default for WithVerifiedTTL.
const DefaultVerifiedTTL = time.Second

// New returns an Authenticator over store.
func New(store KeyStore, opts ...Option) *Authenticator {
	a := &Authenticator{
		store:       store,
		log:         slog.New(slog.DiscardHandler),
		now:         time.Now,
		touchEvery:  time.Minute,
		verifiedTTL: DefaultVerifiedTTL,
		verified:    make(map[string]verifiedKey),
		touched:     make(map[string]time.Time),
		workers:     workerTokens{byHash: make(map[tokenHash]Principal), byWorker: make(map[string]tokenHash)},
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

const (
	keyIDPrefix = "ak_"
	// keyIDRandom random bytes make 16 base32 characters.
	keyIDRandom = 10
	keyIDLen    = len(keyIDPrefix) + 16
	// secretRandom is the secret's entropy in bytes: 256 bits.
	secretRandom = 32
)

// keyIDEncoding is lowercase base32 so ids are easy to read aloud and type.
var keyIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewKey makes a fresh key id ("ak_" and 16 base32 characters, 80 random
// bits) and secret (32 random bytes, base64url without padding).
func NewKey() (id, secret string) {
	idBytes := make([]byte, keyIDRandom)
	rand.Read(idBytes) // never fails: a broken system source crashes the program
	secretBytes := make([]byte, secretRandom)
	rand.Read(secretBytes)
	return keyIDPrefix + keyIDEncoding.EncodeToString(idBytes), base64.RawURLEncoding.EncodeToString(secretBytes)
}

// wellFormedKeyID lets obviously bogus ids be rejected without a lookup.
func wellFormedKeyID(id string) bool {
	if len(id) != keyIDLen || !strings.HasPrefix(id, keyIDPrefix) {
		return false
	}
	for _, r := range id[len(keyIDPrefix):] {
		if !(r >= 'a' && r <= 'z' || r >= '2' && r <= '7') {
			return false
		}
	}
	return true
}

// hashSecret is what is stored for a secret. A single SHA-256 is enough:
// the secret is 256 random bits, so there is nothing for a slow KDF to
// protect against (it exists to stretch guessable passwords), and the hash
// costs well under a microsecond on every RPC. The id is mixed in, behind a
// domain prefix, so a stored hash is only good for its own key.
func hashSecret(id, secret string) []byte {
	h := sha256.New()
	h.Write([]byte("atoll api key v1\x00"))
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(secret))
	return h.Sum(nil)
}

// CreateKey makes a key for account, creating the account if needed, and
// returns its id and secret. The secret is not kept: this is the only time
// anyone sees it.
func (a *Authenticator) CreateKey(ctx context.Context, account, label string) (id, secret string, err error) {
	if _, err := a.store.EnsureAccount(ctx, account); err != nil {
		return "", "", fmt.Errorf("create key: %w", err)
	}
	id, secret = NewKey()
	k := state.Key{ID: id, Account: account, SecretHash: hashSecret(id, secret), Label: label}
	if err := a.store.InsertKey(ctx, k); err != nil {
		return "", "", fmt.Errorf("create key: %w", err)
	}
	a.log.Info("API key created", "account", account, "key", id, "label", label)
	return id, secret, nil
}

// Verify checks a credential and returns who it belongs to: an API key
// (id and secret), or, when id is empty, a worker token passed as secret.
// A credential that does not let the caller in gives an error wrapping
// ErrUnauthenticated whose text is safe to show; any other error is an
// internal failure (the database), not the caller's fault.
func (a *Authenticator) Verify(ctx context.Context, id, secret string) (Principal, error) {
	if id == "" {
		if secret == "" {
			return Principal{}, errMissingCredentials
		}
		return a.workers.verify(secret)
	}
	return a.verifyKey(ctx, id, secret)
}

// dummyHash is compared against when there is no stored hash, so an unknown
// id costs about what a wrong secret does.
var dummyHash = hashSecret("", "")

func (a *Authenticator) verifyKey(ctx context.Context, id, secret string) (Principal, error) {
	if secret == "" || !wellFormedKeyID(id) {
		a.log.Debug("API key rejected", "key", clip(id), "reason", "malformed")
		return Principal{}, errInvalidKey
	}
	sum := hashSecret(id, secret)
	now := a.now()
	a.mu.Lock()
	v, ok := a.verified[id]
	generation := a.revocations
	a.mu.Unlock()
	// A cached entry only ever lets the exact credential in; anything else
	// goes to the store, so a miss looks the same from outside.
	if ok && now.Before(v.expires) && subtle.ConstantTimeCompare(v.hash, sum) == 1 {
		a.touch(ctx, id, now)
		return Principal{Account: v.account, KeyID: id}, nil
	}

	k, err := a.store.KeyByID(ctx, id)
	switch {
	case errors.Is(err, state.ErrNotFound):
		subtle.ConstantTimeCompare(dummyHash, sum)
		a.log.Debug("API key rejected", "key", id, "reason", "unknown id")
		return Principal{}, errInvalidKey
	case err != nil:
		return Principal{}, fmt.Errorf("verify key: %w", err)
	}
	if subtle.ConstantTimeCompare(k.SecretHash, sum) != 1 {
		a.log.Debug("API key rejected", "key", id, "account", k.Account, "reason", "wrong secret")
		return Principal{}, errInvalidKey
	}
	if k.Revoked() {
		a.mu.Lock()
		delete(a.verified, id)
		a.mu.Unlock()
		a.log.Debug("API key rejected", "key", id, "account", k.Account, "reason", "revoked")
		return Principal{}, errInvalidKey
	}
	if a.verifiedTTL > 0 {
		a.mu.Lock()
		if a.revocations == generation {
			a.verified[id] = verifiedKey{hash: k.SecretHash, account: k.Account, expires: now.Add(a.verifiedTTL)}
		}
		a.mu.Unlock()
	}
	a.touch(ctx, id, now)
	return Principal{Account: k.Account, KeyID: id}, nil
}

// touch records the key's use, at most once per touchEvery. A failure is
// logged, not returned: last-used is informational and must not fail calls.
func (a *Authenticator) touch(ctx context.Context, id string, now time.Time) {
	a.mu.Lock()
	last, ok := a.touched[id]
	due := !ok || now.Sub(last) >= a.touchEvery
	if due {
		a.touched[id] = now
	}
	a.mu.Unlock()
	if !due {
		return
	}
	if err := a.store.TouchKey(ctx, id); err != nil {
		a.log.Warn("recording API key use failed", "key", id, "err", err)
	}
}

// Revoke revokes the key; later calls with it fail at once. An unknown id
// gives an error wrapping state.ErrNotFound. Revoking twice is not an error.
func (a *Authenticator) Revoke(ctx context.Context, id string) error {
	if err := a.store.RevokeKey(ctx, id); err != nil {
		return err
	}
	a.mu.Lock()
	a.revocations++
	delete(a.verified, id)
	delete(a.touched, id)
	a.mu.Unlock()
	a.log.Info("API key revoked", "key", id)
	return nil
}

// KeyInfo describes a key for listing; it carries nothing secret.
type KeyInfo struct {
	ID      string
	Account string
	Label   string
	Created time.Time
	// LastUsed is zero if never used; it lags real use by up to the
	// touch interval.
	LastUsed time.Time
	// RevokedAt is zero while the key is valid.
	RevokedAt time.Time
}

// List returns the keys of account, or of all accounts when account is
// empty, oldest first, revoked ones included.
func (a *Authenticator) List(ctx context.Context, account string) ([]KeyInfo, error) {
	keys, err := a.store.ListKeys(ctx, account)
	if err != nil {
		return nil, err
	}
	out := make([]KeyInfo, len(keys))
	for i, k := range keys {
		out[i] = KeyInfo{ID: k.ID, Account: k.Account, Label: k.Label, Created: k.Created, LastUsed: k.LastUsed, RevokedAt: k.RevokedAt}
	}
	return out, nil
}

// clip bounds what a caller-chosen string can put in a log line.
func clip(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
