package state

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestListAccounts(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for _, name := range []string{"zed", "alice", "alice"} {
		if _, err := s.EnsureAccount(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.ListAccounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"alice", "zed"}, got); diff != "" {
		t.Errorf("ListAccounts (-want +got):\n%s", diff)
	}
}
