package sandbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The build session protocol, between a buildSession on the server and
// BuildInit, the first process of its container:
//
//   - the container's stdin carries one JSON buildRequest per line. Its
//     write end is held by the server alone, so it is also the build's
//     lifeline: when it closes (the session is closed or cancelled, or the
//     server died, kill -9 included) BuildInit returns, and as the PID
//     namespace's init its exit makes the kernel kill every process left
//     in the container: no setup.py outlives the server.
//   - the container's stdout carries records, one per line: "o " and one
//     line of the step's merged stdout and stderr; "x " and the step's
//     exit status (128+N for signal N), which ends the step; "e " and why
//     the step could not start, which also ends it.
type buildRequest struct {
	Dir  string   `json:"dir"`
	Args []string `json:"args"`
}

// Output records of the build session protocol.
const (
	recOutput = "o "
	recExit   = "x "
	recError  = "e "
)

// maxRequestBytes bounds one request line.
const maxRequestBytes = 1 << 20

// outputGrace is how long a step's output is still read after the step
// exited, for a process it left behind that holds the pipe open.
const outputGrace = 2 * time.Second

// BuildInit is `atoll build-init`, the first process of a build
// container (see the protocol above). It runs the steps it is sent one at
// a time and returns when its stdin closes; it must be the container's
// PID 1, whose exit ends everything else in it.
func BuildInit(stdin io.Reader, stdout io.Writer) int {
	w := &recordWriter{w: bufio.NewWriter(stdout)}
	reqs := make(chan buildRequest)
	go func() {
		defer close(reqs)
		sc := bufio.NewScanner(stdin)
		sc.Buffer(make([]byte, 0, 64*1024), maxRequestBytes)
		for sc.Scan() {
			var r buildRequest
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || len(r.Args) == 0 {
				w.write(recError, fmt.Sprintf("malformed build request: %v", err))
				continue
			}
			reqs <- r
		}
	}()
	for {
		r, ok := <-reqs
		if !ok {
			return 0
		}
		done := make(chan [2]string, 1)
		go func() { done <- runBuildStep(r, w) }()
		select {
		case end := <-done:
			// Written here, not by the step: the next request can only
			// follow it, so it never races the step's end.
			w.write(end[0], end[1])
		case _, ok := <-reqs:
			if ok {
				w.write(recError, "a request arrived while a step ran")
			}
			// The lifeline closed mid-step: return, and the kernel ends
			// the step with the container.
			return 1
		}
	}
}

// runBuildStep runs one step, writing its output, and returns the record
// that ends it.
func runBuildStep(r buildRequest, w *recordWriter) [2]string {
	pr, pw, err := os.Pipe()
	if err != nil {
		return [2]string{recError, err.Error()}
	}
	cmd := exec.Command(r.Args[0], r.Args[1:]...)
	cmd.Dir = r.Dir
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return [2]string{recError, err.Error()}
	}
	pw.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
		for sc.Scan() {
			w.write(recOutput, strings.TrimRight(sc.Text(), "\r"))
		}
		if sc.Err() != nil {
			io.Copy(io.Discard, pr)
		}
	}()
	cmd.Wait()
	select {
	case <-copied:
	case <-time.After(outputGrace):
		pr.SetReadDeadline(time.Now())
		<-copied
	}
	pr.Close()
	code := cmd.ProcessState.ExitCode()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return [2]string{recExit, strconv.Itoa(code)}
}

// recordWriter writes whole records from several goroutines.
type recordWriter struct {
	mu sync.Mutex
	w  *bufio.Writer
}

func (r *recordWriter) write(kind, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.w.WriteString(kind)
	r.w.WriteString(strings.ReplaceAll(text, "\n", " "))
	r.w.WriteByte('\n')
	r.w.Flush()
}
