package workerproto

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"testing"
)

// readBounded returns exactly the bytes sent, whether they fit the eager
// allocation, end inside the chunks read before the whole buffer, or run
// past them.
func TestReadBoundedKeepsEveryByte(t *testing.T) {
	for _, n := range []int{0, 1, eagerBytes, eagerBytes + 1, 4*eagerBytes + 3, 37*eagerBytes + 11} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i*7 + i>>13)
		}
		// One byte more than stated: it must be left unread.
		r := bytes.NewReader(append(append([]byte{}, want...), 0xEE))
		got, err := readBounded(r, uint64(n))
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("n=%d: the bytes read differ from those sent", n)
		}
		if r.Len() != 1 {
			t.Fatalf("n=%d: %d bytes left unread, want 1", n, r.Len())
		}
	}
}

// A peer that states a 1 GB value and sends 2 MB of it makes the reader
// allocate in proportion to the 2 MB, not the 1 GB, and is refused as cut
// short.
func TestReadBoundedHoldsWhatWasSent(t *testing.T) {
	const stated, sent = 1 << 30, 2 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readBounded(io.LimitReader(zeros{}, sent), stated)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("err = %v, want ErrProtocol", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 4*sent {
		t.Fatalf("allocated %d bytes for %d sent of %d stated; want at most %d", alloc, sent, stated, 4*sent)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
