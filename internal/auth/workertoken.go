package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
)

// workerTokenPrefix marks worker tokens so one pasted in the wrong place is
// recognisable.
const workerTokenPrefix = "awt_"

// tokenHash indexes tokens: looking up a secret by its own value in a map
// would let lookup timing say something about it.
type tokenHash [sha256.Size]byte

// workerTokens holds the tokens of live workers. They are deliberately only
// in memory: a worker does not outlive the server that started it, so
// neither does its token.
type workerTokens struct {
	mu       sync.RWMutex
	byHash   map[tokenHash]Principal
	byWorker map[string]tokenHash
}

// IssueWorkerToken returns a new token that authenticates as account, with
// Principal.WorkerID set to workerID, until RevokeWorkerToken(workerID).
// The token replaces any earlier one for that worker. It is an opaque
// random string, never derived from the account's keys.
func (a *Authenticator) IssueWorkerToken(account, workerID string) string {
	b := make([]byte, secretRandom)
	rand.Read(b) // never fails: a broken system source crashes the program
	token := workerTokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	h := tokenHash(sha256.Sum256([]byte(token)))

	w := &a.workers
	w.mu.Lock()
	if old, ok := w.byWorker[workerID]; ok {
		delete(w.byHash, old)
	}
	w.byHash[h] = Principal{Account: account, WorkerID: workerID}
	w.byWorker[workerID] = h
	w.mu.Unlock()
	a.log.Debug("worker token issued", "account", account, "worker", workerID)
	return token
}

// RevokeWorkerToken ends the worker's token; call it when the worker is
// gone. Unknown workers are ignored.
func (a *Authenticator) RevokeWorkerToken(workerID string) {
	w := &a.workers
	w.mu.Lock()
	h, ok := w.byWorker[workerID]
	if ok {
		delete(w.byHash, h)
		delete(w.byWorker, workerID)
	}
	w.mu.Unlock()
	if ok {
		a.log.Debug("worker token revoked", "worker", workerID)
	}
}

func (w *workerTokens) verify(token string) (Principal, error) {
	h := tokenHash(sha256.Sum256([]byte(token)))
	w.mu.RLock()
	p, ok := w.byHash[h]
	w.mu.RUnlock()
	if !ok {
		return Principal{}, errInvalidWorkerToken
	}
	return p, nil
}
