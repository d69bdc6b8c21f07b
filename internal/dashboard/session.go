package dashboard

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// DefaultSessionTTL is how long a login lasts.
const DefaultSessionTTL = 12 * time.Hour

// maxSessions bounds the sessions held; beyond it the oldest is dropped, so
// that logging in in a loop cannot grow the server's memory.
const maxSessions = 10000

// session is what the server remembers of a login. The key's secret is
// never kept: the key id is, so that revoking the key ends the session.
type session struct {
	account string
	keyID   string
	admin   bool
	// csrf is the token every state-changing form of this session carries.
	csrf    string
	created time.Time
	expires time.Time
}

// sessions holds the live sessions by the SHA-256 of their cookie value, so
// that what sits in memory cannot be replayed as a cookie.
type sessions struct {
	ttl time.Duration
	now func() time.Time

	mu sync.Mutex
	m  map[[32]byte]*session
}

func newSessions(ttl time.Duration) *sessions {
	return &sessions{ttl: ttl, now: time.Now, m: map[[32]byte]*session{}}
}

// randomToken returns 32 random bytes, base64url-encoded.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// create starts a session and returns its cookie value.
func (s *sessions) create(account, keyID string, admin bool) (string, *session) {
	id := randomToken()
	now := s.now()
	sess := &session{account: account, keyID: keyID, admin: admin, csrf: randomToken(), created: now, expires: now.Add(s.ttl)}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	if len(s.m) >= maxSessions {
		var oldest [32]byte
		var at time.Time
		for k, v := range s.m {
			if at.IsZero() || v.created.Before(at) {
				oldest, at = k, v.created
			}
		}
		delete(s.m, oldest)
	}
	s.m[sha256.Sum256([]byte(id))] = sess
	return id, sess
}

// get returns the live session of a cookie value, or nil.
func (s *sessions) get(id string) *session {
	if id == "" {
		return nil
	}
	h := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.m[h]
	if sess == nil {
		return nil
	}
	if !s.now().Before(sess.expires) {
		delete(s.m, h)
		return nil
	}
	return sess
}

// end forgets the session of a cookie value.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, sha256.Sum256([]byte(id)))
}

func (s *sessions) pruneLocked(now time.Time) {
	for k, v := range s.m {
		if !now.Before(v.expires) {
			delete(s.m, k)
		}
	}
}
