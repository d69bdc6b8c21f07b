//go:build !linux

package sandbox

import (
	"context"
	"fmt"
	"net/netip"
)

// isolatedNet needs Linux network namespaces.
type isolatedNet struct{}

type workerNet struct{}

func newIsolatedNet(string, string, []netip.Prefix) (*isolatedNet, error) {
	return nil, fmt.Errorf("%w: isolated worker networks need Linux network namespaces", ErrNetworkUnavailable)
}

func (*isolatedNet) start(string) (*workerNet, error) {
	return nil, fmt.Errorf("%w: isolated worker networks need Linux network namespaces", ErrNetworkUnavailable)
}

func (*workerNet) path() string                    { return "" }
func (*workerNet) waitReady(context.Context) error { return nil }
func (*workerNet) close() error                    { return nil }
