package workerproto

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	atollv1 "github.com/atoll-dev/atoll/api/atoll/v1"
)

// TestCallCarriesEnvAndYieldedValues: the call's environment reaches the
// agent, and yielded values reach OnYield in order, before the result.
func TestCallCarriesEnvAndYieldedValues(t *testing.T) {
	c, a, _ := pair(t)
	gotEnv := make(chan map[string]string, 1)
	go func() {
		_ = a.Send(ready(1))
		call, err := a.ReadCall()
		if err != nil {
			return
		}
		gotEnv <- call.Env
		_, _ = io.ReadAll(a.Payload(call))
		for _, v := range []string{"one", "two"} {
			_ = a.SendYielded(int64(len(v)), func(w io.Writer) error { _, err := io.WriteString(w, v); return err })
		}
		_ = a.SendValue(4, func(w io.Writer) error { _, err := io.WriteString(w, "done"); return err })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.AwaitReady(ctx, func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	var yielded []string
	res, err := c.CallWith(ctx, Request{
		Function: []byte("fn"), Arguments: []byte("args"), Env: map[string]string{"TOKEN": "t"},
		OnOutput: func(*atollv1.Output) {},
		OnYield:  func(b []byte) { yielded = append(yielded, string(b)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"one", "two"}, yielded); diff != "" {
		t.Errorf("yielded (-want +got):\n%s", diff)
	}
	if string(res.GetValue()) != "done" {
		t.Errorf("result = %q, want done", res.GetValue())
	}
	if diff := cmp.Diff(map[string]string{"TOKEN": "t"}, <-gotEnv); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
}

// TestYieldWithoutReceiverBreaksTheProtocol: a worker yielding for a call
// that is not a generator's is a protocol violation, not a silent drop.
func TestYieldWithoutReceiverBreaksTheProtocol(t *testing.T) {
	c, a, _ := pair(t)
	go func() {
		_ = a.Send(ready(1))
		call, err := a.ReadCall()
		if err != nil {
			return
		}
		_, _ = io.ReadAll(a.Payload(call))
		_ = a.SendYielded(1, func(w io.Writer) error { _, err := w.Write([]byte("x")); return err })
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.AwaitReady(ctx, func(*atollv1.Output) {}); err != nil {
		t.Fatal(err)
	}
	_, err := c.Call(ctx, []byte("fn"), nil, func(*atollv1.Output) {})
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("Call = %v, want ErrProtocol", err)
	}
}
