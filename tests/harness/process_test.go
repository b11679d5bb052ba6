package harness

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestProcessStopReapsChildren: a child that left the process group (so the
// group SIGKILL misses it) and outlived its parent is still killed by stop.
func TestProcessStopReapsChildren(t *testing.T) {
	// In a non-interactive sh a background job stays in the group, so setsid
	// just moves it to a new session and execs sleep: a child outside the group.
	p, err := startProcess("sh", filepath.Join(t.TempDir(), "sh.log"), os.Environ(), "/bin/sh", "-c", "setsid sleep 60 & wait")
	if err != nil {
		t.Fatal(err)
	}
	defer p.stop(time.Second)
	var child procInfo
	Eventually(t, 10*time.Second, func() bool {
		kids := childProcs(p.cmd.Process.Pid, "sleep")
		if len(kids) == 1 {
			child = kids[0]
		}
		return len(kids) == 1
	}, "sh did not start sleep")

	if err := p.kill(); err != nil {
		t.Fatal(err)
	}
	if ProcessGone(child.pid) {
		t.Fatalf("kill: child %d is gone; it should outlive its parent", child.pid)
	}
	p.stop(time.Second)
	if !ProcessGone(child.pid) {
		t.Fatalf("stop: child %d still running", child.pid)
	}
}
