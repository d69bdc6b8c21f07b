package workerproto

import (
	"errors"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// spliceChunk is the most one splice(2) is asked to move: a pipe's
// capacity once grown (see GrowPipe).
const spliceChunk = 1 << 20

// GrowPipe raises the capacity of f, if it is a pipe, to spliceChunk
// (fs.pipe-max-size's default, allowed without privilege): a 100 MB value
// then crosses it in 100 wake-ups rather than 1,600. Anything that is not
// a pipe, or a host that refuses, keeps its size.
func GrowPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, spliceChunk)
	})
}

// splice moves n bytes from src to dst inside the kernel (one of them must
// be a pipe): pages move between pipes, or between a pipe and a socket,
// without being copied through this process. handled is false, with
// nothing moved, where the pair cannot splice (neither is a pipe, or
// either is not a file descriptor); the caller then copies.
func splice(dst io.Writer, src io.Reader, n int64) (moved int64, handled bool, err error) {
	sc, ok := src.(syscall.Conn)
	if !ok {
		return 0, false, nil
	}
	return spliceFrom(dst, sc, nil, n)
}

// spliceFile moves n bytes of the file src, from offset 0, into dst (a
// pipe) inside the kernel: the pages of a memfd are referenced by the
// pipe, not copied. The file's own position (shared with every process
// holding it) is neither used nor moved. handled is false, with nothing
// moved, where dst is not a pipe; the caller then copies.
func spliceFile(dst io.Writer, src *os.File, n int64) (moved int64, handled bool, err error) {
	var off int64
	return spliceFrom(dst, src, &off, n)
}

// spliceFrom is splice and spliceFile on the two descriptors, each held
// open (Control) while they are used; soff as for spliceFDs.
func spliceFrom(dst io.Writer, src syscall.Conn, soff *int64, n int64) (moved int64, handled bool, err error) {
	dc, ok := dst.(syscall.Conn)
	if !ok {
		return 0, false, nil
	}
	drc, err := dc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	src2, err := src.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	handled = true
	cerr := src2.Control(func(sfd uintptr) {
		derr := drc.Control(func(dfd uintptr) {
			moved, handled, err = spliceFDs(int(dfd), int(sfd), soff, n)
		})
		if err == nil {
			err = derr
		}
	})
	if err == nil {
		err = cerr
	}
	return moved, handled, err
}

// spliceFDs is splice's loop on two descriptors, which may be
// non-blocking (Go's poller owns them): it waits for both with poll(2),
// which leaves the poller's edge-triggered state alone. soff, if not nil,
// is the offset in sfd (a file) to read from, advanced as bytes move.
func spliceFDs(dfd, sfd int, soff *int64, n int64) (moved int64, handled bool, err error) {
	for moved < n {
		m, err := unix.Splice(sfd, soff, dfd, nil, int(min(n-moved, spliceChunk)), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		switch {
		case m > 0:
			moved += m
		case err == nil:
			return moved, true, io.ErrUnexpectedEOF
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			if err := waitBoth(sfd, dfd); err != nil {
				return moved, true, err
			}
		case moved == 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)):
			return 0, false, nil
		default:
			return moved, true, err
		}
	}
	return moved, true, nil
}

// waitBoth blocks until sfd is readable and dfd writable at once (or
// either is closed or broken, which the next splice reports).
func waitBoth(sfd, dfd int) error {
	fds := [2]unix.PollFd{{Fd: int32(sfd), Events: unix.POLLIN}, {Fd: int32(dfd), Events: unix.POLLOUT}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds[:], 0); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
		pending := make([]unix.PollFd, 0, 2)
		for _, f := range fds {
			if f.Revents == 0 {
				pending = append(pending, unix.PollFd{Fd: f.Fd, Events: f.Events})
			}
		}
		if len(pending) == 0 {
			return nil
		}
		if _, err := unix.Poll(pending, -1); err != nil && !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
