package secrets

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/atoll-dev/atoll/internal/state"
)

func openVault(t *testing.T) (*Vault, *state.Store, string) {
	t.Helper()
	dir := t.TempDir()
	store, err := state.Open(context.Background(), filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	v, err := Open(store, filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return v, store, dir
}

func TestSetResolveListDelete(t *testing.T) {
	ctx := context.Background()
	v, _, _ := openVault(t)
	if err := v.Set(ctx, "acme", "db", map[string]string{"DB_USER": "u", "DB_PASSWORD": "p"}); err != nil {
		t.Fatal(err)
	}
	if err := v.Set(ctx, "acme", "api", map[string]string{"DB_USER": "override", "API_KEY": "k"}); err != nil {
		t.Fatal(err)
	}
	env, err := v.Resolve(ctx, "acme", []string{"db", "api"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"DB_USER": "override", "DB_PASSWORD": "p", "API_KEY": "k"}
	if diff := cmp.Diff(want, env); diff != "" {
		t.Errorf("Resolve (-want +got):\n%s", diff)
	}
	infos, err := v.List(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 2 || infos[1].Name != "db" || !cmp.Equal(infos[1].Keys, []string{"DB_PASSWORD", "DB_USER"}) {
		t.Errorf("List = %+v", infos)
	}
	if _, err := v.Resolve(ctx, "other", []string{"db"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("another account's secret: %v, want ErrNotFound", err)
	}
	if err := v.Delete(ctx, "acme", "db"); err != nil {
		t.Fatal(err)
	}
	if err := v.Delete(ctx, "acme", "db"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
}

func TestValuesAreSealedInTheDatabase(t *testing.T) {
	ctx := context.Background()
	v, store, dir := openVault(t)
	if err := v.Set(ctx, "acme", "db", map[string]string{"PASSWORD": "plain-text-value-42"}); err != nil {
		t.Fatal(err)
	}
	store.Close()
	for _, name := range []string{"state.db", "state.db-wal"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("plain-text-value-42")) {
			t.Errorf("%s holds the value in the clear", name)
		}
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", st.Mode().Perm())
	}
}

func TestSealedValueIsBoundToItsRow(t *testing.T) {
	ctx := context.Background()
	v, store, _ := openVault(t)
	if err := v.Set(ctx, "acme", "db", map[string]string{"A": "1"}); err != nil {
		t.Fatal(err)
	}
	sec, err := store.GetSecret(ctx, "acme", "db")
	if err != nil {
		t.Fatal(err)
	}
	// The same sealed bytes under another account do not open.
	sec.Account = "mallory"
	if err := store.PutSecret(ctx, sec); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Resolve(ctx, "mallory", []string{"db"}); err == nil {
		t.Error("a sealed value copied to another account opened")
	}
}

func TestKeyFileOpenToOthersIsRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, KeyFile)
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 32), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(nil, path); !errors.Is(err, ErrKeyFile) {
		t.Errorf("Open = %v, want ErrKeyFile", err)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		secret string
		values map[string]string
		ok     bool
	}{
		{name: "plain", secret: "db", values: map[string]string{"A_1": "x"}, ok: true},
		{name: "empty name", secret: "", values: map[string]string{"A": "x"}},
		{name: "slash in name", secret: "a/b", values: map[string]string{"A": "x"}},
		{name: "no variables", secret: "db", values: nil},
		{name: "variable starts with digit", secret: "db", values: map[string]string{"1A": "x"}},
		{name: "value too big", secret: "db", values: map[string]string{"A": string(make([]byte, MaxValueBytes+1))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.secret, tt.values)
			if (err == nil) != tt.ok {
				t.Errorf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Errorf("Validate = %v, want ErrInvalid", err)
			}
		})
	}
}
