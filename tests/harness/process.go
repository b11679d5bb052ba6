package harness

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// process is a child in its own process group, logging to a file.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
	stopped bool
	// children maps the pids of the processes this one started (Vault's
	// plugins) to their start times. They are recorded while it runs: once it
	// is gone, /proc no longer links an orphan to it.
	children map[int]uint64
}

func startProcess(name, logPath string, env []string, bin string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "=== %s: %s %s (started %s)\n", name, bin, strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Own process group: stop kills the process and anything it spawned
		// (Vault's plugin processes) as a unit.
		Setpgid: true,
		// If the test binary dies (e.g. go test -timeout panics), the kernel
		// sends SIGTERM so nothing outlives it; Vault then stops its plugins.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{}), children: map[int]uint64{}}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process group, waits up to grace, then SIGKILLs
// the whole group and every child recorded by recordChildren that is still
// running (orphaned plugins that left the group, or outlived a kill).
func (p *process) stop(grace time.Duration) {
	if p == nil || p.stopped {
		return
	}
	p.stopped = true
	pgid := p.cmd.Process.Pid
	if !p.exited() {
		p.recordChildren()
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
	p.reapChildren()
}

// terminate sends SIGTERM to the process alone (not its group), as
// `systemctl stop` with KillMode=process (HashiCorp's unit for Vault) or a
// `kill PID` does, so that it shuts down its children itself; it waits up
// to grace, then stops the group like stop (SIGKILL, and the recorded
// children that are still running are reaped).
func (p *process) terminate(grace time.Duration) {
	if p == nil || p.stopped {
		return
	}
	if !p.exited() {
		p.recordChildren()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	p.stop(5 * time.Second)
}

// kill SIGKILLs the process alone, as a crash would, and waits for it to
// exit. Its children are left running; they are recorded first so that stop
// can kill them.
func (p *process) kill() error {
	if p.exited() {
		return fmt.Errorf("%s already exited (%v)", p.name, p.waitErr)
	}
	p.recordChildren()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// recordChildren adds the current children of the process to p.children.
func (p *process) recordChildren() {
	for _, c := range childProcs(p.cmd.Process.Pid, "") {
		p.children[c.pid] = c.start
	}
}

// reapChildren SIGKILLs the recorded children that are still running and
// waits up to 5s for them to go. The start time guards against a recycled
// pid.
func (p *process) reapChildren() {
	var alive []int
	for pid, start := range p.children {
		if _, s, state, ok := readProcStat(pid); ok && s == start && state != "Z" {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			alive = append(alive, pid)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range alive {
		for !ProcessGone(pid) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// ProcessGone reports whether process pid has exited: /proc/PID is absent or
// the process is a zombie (exited, not yet reaped by its parent, which for an
// orphan is init or a subreaper).
func ProcessGone(pid int) bool {
	_, _, state, ok := readProcStat(pid)
	return !ok || state == "Z" || state == "X"
}

// awaitDiscovery polls an authorization server's discovery document until
// it answers 200 with JSON (30 s at most) or the server's process exits.
func awaitDiscovery(c *http.Client, p *process, discoveryURL string) (map[string]any, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc, err := fetchDiscovery(c, discoveryURL)
		if err == nil {
			return doc, nil
		}
		if p.exited() {
			return nil, fmt.Errorf("%s exited during startup (%v)", p.name, p.waitErr)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s did not answer within 30s: %w", discoveryURL, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fetchDiscovery(c *http.Client, discoveryURL string) (map[string]any, error) {
	resp, err := c.Get(discoveryURL)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return nil, err
	}
	return doc, nil
}
