// Package secrets owns each account's secrets: named sets of environment
// variables, sealed with AES-256-GCM before they reach the database, under
// a key kept outside it (a file of mode 0600 in the data directory), so a
// copy of the database alone reveals nothing. It checks names and sizes and
// opens secrets for the calls that name them.
//
// It must not log a value, hand one to anything but a call's worker, or
// decide who may read a secret: the caller's account comes from the server.
package secrets

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"time"

	"github.com/atoll-dev/atoll/internal/state"
)

// KeyFile is the key's file name in the data directory.
const KeyFile = "secrets.key"

// Limits on what a secret holds.
const (
	MaxNameLen    = 64
	MaxVariables  = 64
	MaxValueBytes = 32 << 10
	MaxTotalBytes = 128 << 10
)

var (
	secretName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	varName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Store is the database the sealed secrets live in.
type Store interface {
	PutSecret(ctx context.Context, sec state.SealedSecret) error
	GetSecret(ctx context.Context, account, name string) (state.SealedSecret, error)
	ListSecrets(ctx context.Context, account string) ([]state.SealedSecret, error)
	DeleteSecret(ctx context.Context, account, name string) error
}

// Info describes a secret without its values.
type Info struct {
	Name    string
	Keys    []string
	Updated time.Time
}

// Vault seals and opens secrets.
type Vault struct {
	store Store
	aead  cipher.AEAD
	now   func() time.Time
}

// Open returns a Vault over store with the key in keyPath, creating the key
// (32 random bytes, mode 0600) if the file does not exist. A key file that
// others may read is refused.
func Open(store Store, keyPath string) (*Vault, error) {
	key, err := loadKey(keyPath)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKeyFile, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Vault{store: store, aead: aead, now: time.Now}, nil
}

func loadKey(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		_, werr := f.Write(key)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return nil, fmt.Errorf("write secrets key %s: %w", path, werr)
		}
		return key, nil
	}
	if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create secrets key %s: %w", path, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key %s: %w", path, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is open to other users (mode %v); chmod 600 it", ErrKeyFile, path, st.Mode().Perm())
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read secrets key %s: %w", path, err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("%w: %s holds %d bytes, not a 32-byte key", ErrKeyFile, path, len(key))
	}
	return key, nil
}

// additional binds a sealed value to its account and name: a value copied
// into another row does not open.
func additional(account, name string) []byte {
	return []byte(account + "\x00" + name)
}

// Validate reports why name and values cannot be a secret.
func Validate(name string, values map[string]string) error {
	if len(name) == 0 || len(name) > MaxNameLen || !secretName.MatchString(name) {
		return fmt.Errorf("%w: name %q must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit",
			ErrInvalid, name, MaxNameLen)
	}
	if len(values) == 0 {
		return fmt.Errorf("%w: secret %q sets no variables; give at least one KEY=VALUE", ErrInvalid, name)
	}
	if len(values) > MaxVariables {
		return fmt.Errorf("%w: secret %q sets %d variables, more than %d", ErrInvalid, name, len(values), MaxVariables)
	}
	total := 0
	for k, v := range values {
		if !varName.MatchString(k) {
			return fmt.Errorf("%w: %q is not an environment variable name (letters, digits and '_', not starting with a digit)", ErrInvalid, k)
		}
		if len(v) > MaxValueBytes {
			return fmt.Errorf("%w: the value of %s is %d bytes, more than %d", ErrInvalid, k, len(v), MaxValueBytes)
		}
		total += len(k) + len(v)
	}
	if total > MaxTotalBytes {
		return fmt.Errorf("%w: secret %q holds %d bytes, more than %d", ErrInvalid, name, total, MaxTotalBytes)
	}
	return nil
}

// Set creates or replaces the account's secret name.
func (v *Vault) Set(ctx context.Context, account, name string, values map[string]string) error {
	if err := Validate(name, values); err != nil {
		return err
	}
	plain, err := json.Marshal(values)
	if err != nil {
		return err
	}
	nonce := make([]byte, v.aead.NonceSize())
	_, _ = rand.Read(nonce)
	sealed := v.aead.Seal(nonce, nonce, plain, additional(account, name))
	return v.store.PutSecret(ctx, state.SealedSecret{Account: account, Name: name, Sealed: sealed, Updated: v.now()})
}

func (v *Vault) open(sec state.SealedSecret) (map[string]string, error) {
	n := v.aead.NonceSize()
	if len(sec.Sealed) < n {
		return nil, fmt.Errorf("secret %q is damaged", sec.Name)
	}
	plain, err := v.aead.Open(nil, sec.Sealed[:n], sec.Sealed[n:], additional(sec.Account, sec.Name))
	if err != nil {
		return nil, fmt.Errorf("secret %q does not open with this server's key (was %s replaced?): %w", sec.Name, KeyFile, err)
	}
	var values map[string]string
	if err := json.Unmarshal(plain, &values); err != nil {
		return nil, fmt.Errorf("secret %q is damaged: %w", sec.Name, err)
	}
	return values, nil
}

// List describes the account's secrets: names and variable names, never
// values.
func (v *Vault) List(ctx context.Context, account string) ([]Info, error) {
	all, err := v.store.ListSecrets(ctx, account)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(all))
	for _, sec := range all {
		values, err := v.open(sec)
		if err != nil {
			return nil, err
		}
		keys := make([]string, 0, len(values))
		for k := range values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out = append(out, Info{Name: sec.Name, Keys: keys, Updated: sec.Updated})
	}
	return out, nil
}

// Delete removes the account's secret name.
func (v *Vault) Delete(ctx context.Context, account, name string) error {
	err := v.store.DeleteSecret(ctx, account, name)
	if errors.Is(err, state.ErrNotFound) {
		return fmt.Errorf("%w: account %s has no secret %q; list them with `atoll secrets list`", ErrNotFound, account, name)
	}
	return err
}

// Resolve opens the named secrets of account into one set of variables,
// a later name winning on a clash.
func (v *Vault) Resolve(ctx context.Context, account string, names []string) (map[string]string, error) {
	env := make(map[string]string)
	for _, name := range names {
		sec, err := v.store.GetSecret(ctx, account, name)
		if errors.Is(err, state.ErrNotFound) {
			return nil, fmt.Errorf("%w: the call names secret %q, which account %s does not have; "+
				"create it with `atoll secrets set %s KEY=VALUE`", ErrNotFound, name, account, name)
		}
		if err != nil {
			return nil, err
		}
		values, err := v.open(sec)
		if err != nil {
			return nil, err
		}
		for k, val := range values {
			env[k] = val
		}
	}
	return env, nil
}
