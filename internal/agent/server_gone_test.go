package agent

import (
	"testing"
	"time"
)

// When the server goes away mid-call (its end of the stream closes, as a
// killed server's does), the agent ends the user's code at once instead of
// letting it run to its end for nobody.
func TestAgentEndsTheCallWhenTheServerGoesAway(t *testing.T) {
	h, python := startAgent(t)
	go h.call(t, pickled(t, python, "__import__('time').sleep"), pickled(t, python, "((60,), {})"))
	time.Sleep(500 * time.Millisecond) // the call is running
	h.hangUp()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("agent: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent went on with the call after the server went away")
	}
	h.done <- nil // for the harness's clean-up
}
