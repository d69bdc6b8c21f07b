package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// A process whose main thread has ended while another still runs shows a
// zombie main thread: it is still alive (it holds its files) until the
// other thread ends too.
func TestAProcessIsAliveUntilItsLastThreadEnds(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("ending a main thread alone takes python3 (ctypes, pthread_exit), which this host lacks")
	}
	// The main thread exits by itself; the other ends when its stdin closes.
	cmd := exec.Command(python, "-c", `
import ctypes, sys, threading
threading.Thread(target=lambda: (sys.stdin.read(), ctypes.CDLL(None)._exit(0))).start()
print("ready", flush=True)
ctypes.CDLL(None).pthread_exit(None)
`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	// Wait until the main thread is a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for !mainThreadZombie(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the helper's main thread did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !alive(pid) {
		t.Error("alive = false while a thread of the process still runs")
	}
	stdin.Close()
	cmd.Wait()
	if alive(pid) {
		t.Error("alive = true after the process ended")
	}
}

func mainThreadZombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}
