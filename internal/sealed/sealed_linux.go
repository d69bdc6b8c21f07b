package sealed

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// required are the seals a received payload must carry: its contents and
// size cannot change while it is passed on.
const required = unix.F_SEAL_WRITE | unix.F_SEAL_GROW | unix.F_SEAL_SHRINK

// Supported says this system has sealed memfds.
func Supported() bool { return true }

// Create makes an empty memfd to be filled through File and then sealed.
func Create(name string) (*File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd: %w", err)
	}
	return &File{f: os.NewFile(uintptr(fd), name)}, nil
}

// Seal seals the file against every change, records its size and rewinds
// it.
func (f *File) Seal() error {
	rc, err := f.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if _, serr = unix.FcntlInt(fd, unix.F_ADD_SEALS, required|unix.F_SEAL_SEAL); serr != nil {
			return
		}
		var st unix.Stat_t
		if serr = unix.Fstat(int(fd), &st); serr == nil {
			f.size = st.Size
		}
		_, _ = unix.Seek(int(fd), 0, 0)
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("seal the memfd: %w", serr)
	}
	return nil
}

// Open takes a descriptor received from a peer: it must be a regular file
// that carries the seals against writing, growing and shrinking (only a
// memfd can), of at most max bytes. On any error the descriptor is closed.
func Open(fd int, max int64) (*File, error) {
	f := &File{f: os.NewFile(uintptr(fd), "payload")}
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (%v)", ErrNotSealed, err)
	}
	if seals&required != required {
		f.Close()
		return nil, fmt.Errorf("%w (its seals are %#x)", ErrNotSealed, seals)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return nil, fmt.Errorf("%w (not a regular file)", ErrNotSealed)
	}
	if st.Size > max {
		f.Close()
		return nil, &TooLargeError{Size: st.Size, Max: max}
	}
	f.size = st.Size
	return f, nil
}
