package sealed

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func dup(t *testing.T, f *os.File) int {
	t.Helper()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestCreateSealOpen(t *testing.T) {
	f, err := Create("test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.File().Write([]byte("payload")); err != nil {
		t.Fatal(err)
	}
	if err := f.Seal(); err != nil {
		t.Fatal(err)
	}
	if f.Size() != 7 {
		t.Fatalf("size %d, want 7", f.Size())
	}
	if _, err := f.File().Write([]byte("more")); !errors.Is(err, unix.EPERM) {
		t.Fatalf("a write after sealing: %v, want EPERM", err)
	}
	got, err := Open(dup(t, f.File()), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	b, err := io.ReadAll(io.NewSectionReader(got.File(), 0, got.Size()))
	if err != nil || string(b) != "payload" {
		t.Fatalf("read %q, %v", b, err)
	}
}

// A peer's descriptor is checked before anything is read from it: only a
// memfd sealed against writing, growing and shrinking, within the bound,
// is taken; every other one is closed.
func TestOpenRefusesWhatIsNotASealedMemfd(t *testing.T) {
	unsealed, err := Create("unsealed")
	if err != nil {
		t.Fatal(err)
	}
	defer unsealed.Close()
	unsealed.File().Write([]byte("x"))

	partly, err := unix.MemfdCreate("partly", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(partly), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		t.Fatal(err)
	}

	plain, err := os.Create(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()

	large, err := Create("large")
	if err != nil {
		t.Fatal(err)
	}
	defer large.Close()
	large.File().Write(make([]byte, 4096))
	if err := large.Seal(); err != nil {
		t.Fatal(err)
	}

	for name, fd := range map[string]int{
		"an unsealed memfd":           dup(t, unsealed.File()),
		"a memfd that can be written": partly,
		"a regular file":              dup(t, plain),
		"a pipe":                      dup(t, r),
	} {
		if _, err := Open(fd, 1<<20); !errors.Is(err, ErrNotSealed) {
			t.Errorf("%s: %v, want ErrNotSealed", name, err)
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			t.Errorf("%s: the descriptor was left open", name)
		}
	}
	fd := dup(t, large.File())
	var tooLarge *TooLargeError
	if _, err := Open(fd, 1024); !errors.As(err, &tooLarge) || tooLarge.Size != 4096 {
		t.Errorf("a 4096 byte memfd with a bound of 1024: %v", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("the too large descriptor was left open")
	}
}
