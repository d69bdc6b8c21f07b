//go:build !linux

package sealed

import "syscall"

// Supported says this system has sealed memfds: it has none.
func Supported() bool { return false }

// Create fails: there are no memfds here.
func Create(string) (*File, error) { return nil, ErrUnsupported }

// Seal fails: there are no memfds here.
func (f *File) Seal() error { return ErrUnsupported }

// Open closes fd and fails: there are no memfds here.
func Open(fd int, _ int64) (*File, error) {
	syscall.Close(fd)
	return nil, ErrUnsupported
}
