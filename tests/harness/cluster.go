package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// A real Vault cluster: several `vault server` processes (not dev mode) with
// integrated storage (Raft), joined with retry_join, initialized with one
// key share, the plugin registered in the catalog with its sha256 from
// plugin_directory and mounted at oauth/, as an operator would set it up.
// Vault OSS standbys forward every request to the active node; the plugin
// runs on the active node only.
//
// With E2E_KEEP_LOGS set, the cluster's directory (every node's config,
// log and Raft data) is created outside the test's temporary directory and
// kept after the test; its path is logged.

// ClusterOptions configure StartCluster. The zero value is a three-node
// cluster with the plugin mounted at oauth/ and nothing configured in it.
type ClusterOptions struct {
	// Nodes is the number of servers (default 3).
	Nodes int
	// LogLevel of every server (default "debug": the plugin's own
	// warnings and errors are logged, the per-call gRPC trace is not).
	LogLevel string
	// RaftPerformanceMultiplier is storage "raft" performance_multiplier:
	// Raft's heartbeat and election timeouts are this many seconds (default
	// 2: a lost leader is replaced within a few seconds, and a loaded 2-core
	// machine does not hold elections for nothing).
	RaftPerformanceMultiplier int
	// NoMount skips registering and mounting the plugin.
	NoMount bool
	// Upstream, when set, configures the mount the way the e2e tests do:
	// oauth/config tidy_interval=1s upstream_timeout=5s, and a provider
	// "local" at this upstream (issuer discovery, vault-basic).
	Upstream *Upstream
	// Env: extra environment variables ("KEY=value") for every server.
	Env []string
}

// Cluster is a running Raft cluster of Vault servers.
type Cluster struct {
	Nodes        []*ClusterNode
	Token        string // root token
	UnsealKey    string // the only key share (base64)
	Mount        string // "oauth" (not mounted with NoMount)
	PluginDir    string // every node's plugin_directory
	PluginSHA256 string

	opts ClusterOptions
}

// ClusterNode is one server of a Cluster. Its embedded *Vault works as for
// a dev server (Addr, Client, CLI, PluginPID, Kill, ...), with the cluster's
// root token; Stop and Restart are the cluster versions.
type ClusterNode struct {
	*Vault
	Index       int
	Name        string // Raft node_id: node0, node1, ...
	ClusterAddr string // https://127.0.0.1:PORT (Raft and request forwarding)
	ConfigPath  string
	DataDir     string // Raft data (kept across Stop/Kill and Restart)

	c        *Cluster
	ctl      *api.Client // short timeouts, for status polling
	logLevel string
}

// StartCluster starts opts.Nodes `vault server` processes with Raft
// storage on free loopback ports, initializes the cluster with one key
// share through the API (vault operator init -key-shares=1
// -key-threshold=1), unseals every node, waits until all of them are
// voters, registers the plugin with its sha256 (vault plugin register
// -sha256=... secret vault-plugin-secrets-oauth) and mounts it at oauth/.
// Everything is stopped at t's cleanup, plugin processes of killed nodes
// included; when t fails, the tail of every node's log is printed.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	ensureSetup(t)
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	if opts.RaftPerformanceMultiplier == 0 {
		opts.RaftPerformanceMultiplier = 2
	}
	start := time.Now()
	c := &Cluster{Mount: "oauth", PluginDir: st.pluginDir, PluginSHA256: st.pluginSHA256, opts: opts}
	root := t.TempDir()
	if os.Getenv("E2E_KEEP_LOGS") != "" {
		// Keep the nodes' logs (and data) after the test, for debugging.
		kept, err := os.MkdirTemp("", "vault-cluster-")
		if err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		root = kept
		t.Logf("E2E_KEEP_LOGS: the cluster's logs and data are kept in %s", root)
	}
	apiPorts := make([]int, opts.Nodes)
	for i := range apiPorts {
		apiPorts[i] = FreePort(t)
	}
	for i := 0; i < opts.Nodes; i++ {
		dir := filepath.Join(root, fmt.Sprintf("node%d", i))
		if err := os.MkdirAll(filepath.Join(dir, "raft"), 0o700); err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		clusterPort := FreePort(t)
		n := &ClusterNode{
			Vault: &Vault{
				Addr:         fmt.Sprintf("http://127.0.0.1:%d", apiPorts[i]),
				Port:         apiPorts[i],
				LogPath:      filepath.Join(dir, "vault.log"),
				PluginDir:    st.pluginDir,
				PluginSHA256: st.pluginSHA256,
				Mount:        c.Mount,
				dir:          dir,
			},
			Index:       i,
			Name:        fmt.Sprintf("node%d", i),
			ClusterAddr: fmt.Sprintf("https://127.0.0.1:%d", clusterPort),
			ConfigPath:  filepath.Join(dir, "vault.hcl"),
			DataDir:     filepath.Join(dir, "raft"),
			c:           c,
			logLevel:    opts.LogLevel,
		}
		var joins strings.Builder
		for j, p := range apiPorts {
			if j != i {
				fmt.Fprintf(&joins, "  retry_join {\n    leader_api_addr = \"http://127.0.0.1:%d\"\n  }\n", p)
			}
		}
		config := fmt.Sprintf(`# %s of a %d-node test cluster (tests/harness/cluster.go)
ui               = false
disable_mlock    = true
api_addr         = %q
cluster_addr     = %q
plugin_directory = %q

storage "raft" {
  path                         = %q
  node_id                      = %q
  performance_multiplier       = %d
  autopilot_update_interval    = "1s"
  autopilot_reconcile_interval = "2s"
%s}

listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
`, n.Name, opts.Nodes, n.Addr, n.ClusterAddr, st.pluginDir, n.DataDir, n.Name,
			opts.RaftPerformanceMultiplier, joins.String(), apiPorts[i], clusterPort)
		if err := os.WriteFile(n.ConfigPath, []byte(config), 0o600); err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		var err error
		if n.Vault.Client, err = newAPIClient(n.Addr, 60*time.Second); err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		if n.ctl, err = newAPIClient(n.Addr, 5*time.Second); err != nil {
			t.Fatalf("StartCluster: %v", err)
		}
		c.Nodes = append(c.Nodes, n)
	}
	// Stop every node at the end, all at once (a Raft cluster losing its
	// quorum one node at a time would only slow the last ones down).
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, n := range c.Nodes {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if n.proc != nil {
					n.proc.terminate(5 * time.Second)
				}
			}()
		}
		wg.Wait()
	})
	for _, n := range c.Nodes {
		dumpLogOnFailure(t, n.Name+" vault server log", n.LogPath, vaultLogFilter)
	}
	for _, n := range c.Nodes {
		n.startProcess(t)
	}
	for _, n := range c.Nodes {
		n.waitListening(t)
	}
	var phases []string
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %s", name, time.Since(start).Round(10*time.Millisecond)))
	}
	phase("listening")

	// vault operator init -key-shares=1 -key-threshold=1, on node0.
	first := c.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := first.Vault.Client.Sys().InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
	if err != nil {
		t.Fatalf("StartCluster: init: %v", err)
	}
	c.Token, c.UnsealKey = resp.RootToken, resp.KeysB64[0]
	for _, n := range c.Nodes {
		n.Token = c.Token
		n.Vault.Client.SetToken(c.Token)
		n.ctl.SetToken(c.Token)
	}
	first.Unseal(t)
	Eventually(t, 60*time.Second, func() bool {
		l, err := first.ctl.Sys().Leader()
		return err == nil && l.IsSelf
	}, "%s did not become active after init and unseal", first.Name)
	phase("first active")
	// New voters are promoted once stable for server_stabilization_time
	// (default 10s). Autopilot learns a follower's index from the
	// standby's periodic echo to the active node: under load the leader
	// runs more than the default max_trailing_logs (1000) ahead between
	// two echoes, and a healthy follower flaps to unhealthy. WaitHealthy
	// checks that every node caught up itself (sys/leader applied index).
	if _, err := first.ctl.Logical().Write("sys/storage/raft/autopilot/configuration",
		map[string]any{"server_stabilization_time": "2s", "max_trailing_logs": 1000000}); err != nil {
		t.Fatalf("StartCluster: autopilot configuration: %v", err)
	}
	// Unsealing a joining node completes its retry_join.
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.unseal(60 * time.Second)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("StartCluster: %v", err)
	}
	phase("unsealed")
	c.WaitHealthy(t, 90*time.Second)
	phase("healthy")

	if !opts.NoMount {
		active := c.Active(t)
		active.MustCLI(t, "plugin", "register", "-sha256="+st.pluginSHA256, "secret", PluginName)
		active.MustCLI(t, "secrets", "enable", "-path="+c.Mount, PluginName)
		if opts.Upstream != nil {
			c.ConfigureProvider(t, opts.Upstream, "local")
		}
	}
	t.Logf("cluster of %d nodes ready in %s (active %s; %s)", opts.Nodes, time.Since(start).Round(time.Millisecond),
		c.Active(t).Name, strings.Join(phases, ", "))
	return c
}

func newAPIClient(addr string, timeout time.Duration) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0 // a retried request would hit the plugin (and upstream) twice
	cfg.Timeout = timeout
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	client.ClearNamespace()
	return client, nil
}

// ConfigureProvider sets up the mount as the e2e tests do: oauth/config
// tidy_interval=1s upstream_timeout=5s, and provider name at up.
func (c *Cluster) ConfigureProvider(t testing.TB, up *Upstream, name string) {
	t.Helper()
	c.MustCLI(t, "write", c.Mount+"/config", "tidy_interval=1s", "upstream_timeout=5s")
	c.MustCLI(t, "write", c.Mount+"/providers/"+name,
		"issuer="+up.URL, "client_id="+up.ClientID, "client_secret="+up.ClientSecret)
}

// ImportGrant mints a refresh token for account alice with offline_access
// and scope at up and imports it as grant name of provider (extra: more
// key=value arguments for the write). It returns the refresh token and the
// upstream's grant id.
func (c *Cluster) ImportGrant(t testing.TB, up *Upstream, provider, name, scope string, extra ...string) (refreshToken, upstreamGrantID string) {
	t.Helper()
	refreshToken, upstreamGrantID = up.Mint(t, up.ClientID, "offline_access "+scope, "alice")
	args := []string{"write", c.Mount + "/grants/" + name, "provider=" + provider,
		"refresh_token=" + refreshToken, "scopes=" + strings.ReplaceAll(scope, " ", ",")}
	c.MustCLI(t, append(args, extra...)...)
	return refreshToken, upstreamGrantID
}

// CLI runs the vault CLI against the active node.
func (c *Cluster) CLI(t testing.TB, args ...string) (string, error) {
	t.Helper()
	return c.Active(t).CLI(t, args...)
}

// MustCLI is CLI that fails the test on error.
func (c *Cluster) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	return c.Active(t).MustCLI(t, args...)
}

// Running returns the nodes whose process is running.
func (c *Cluster) Running() []*ClusterNode {
	var out []*ClusterNode
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Active waits up to 60s for a running node that says it is the active one
// (sys/leader is_self) and returns it.
func (c *Cluster) Active(t testing.TB) *ClusterNode {
	t.Helper()
	var active *ClusterNode
	Eventually(t, 60*time.Second, func() bool {
		active = c.activeNow()
		return active != nil
	}, "no active node (sys/leader is_self) among %s", c.describe())
	return active
}

// activeNow is the running node whose sys/leader says is_self, or nil.
func (c *Cluster) activeNow() *ClusterNode {
	for _, n := range c.Running() {
		if l, err := n.ctl.Sys().Leader(); err == nil && l.IsSelf {
			return n
		}
	}
	return nil
}

// Standbys returns the running nodes other than the active one.
func (c *Cluster) Standbys(t testing.TB) []*ClusterNode {
	t.Helper()
	active := c.Active(t)
	var out []*ClusterNode
	for _, n := range c.Running() {
		if n != active {
			out = append(out, n)
		}
	}
	return out
}

// WaitForLeader waits up to timeout for a node other than old (nil: any
// node) to be active, with every running unsealed node naming it as the
// leader in sys/leader, and returns it.
func (c *Cluster) WaitForLeader(t testing.TB, old *ClusterNode, timeout time.Duration) *ClusterNode {
	t.Helper()
	var leader *ClusterNode
	Eventually(t, timeout, func() bool {
		leader = c.activeNow()
		if leader == nil || leader == old {
			return false
		}
		for _, n := range c.Running() {
			l, err := n.ctl.Sys().Leader()
			if err != nil {
				return false
			}
			if l.LeaderAddress != leader.Addr {
				if h, err := n.ctl.Sys().Health(); err == nil && h.Sealed {
					continue // a sealed node knows no leader
				}
				return false
			}
		}
		return true
	}, "no new leader (other than %v) known to every node: %s", old, c.describe())
	return leader
}

// StepDown asks the active node to step down (sys/step-down) and waits up to
// 60s for another node to be active. It returns both.
func (c *Cluster) StepDown(t testing.TB) (old, leader *ClusterNode) {
	t.Helper()
	old = c.Active(t)
	if err := old.Vault.Client.Sys().StepDown(); err != nil {
		t.Fatalf("StepDown: %s: %v", old.Name, err)
	}
	return old, c.WaitForLeader(t, old, 60*time.Second)
}

// RaftServer is one entry of sys/storage/raft/configuration.
type RaftServer struct {
	NodeID  string `json:"node_id"`
	Address string `json:"address"`
	Leader  bool   `json:"leader"`
	Voter   bool   `json:"voter"`
}

// RaftConfiguration returns the Raft servers (sys/storage/raft/configuration).
func (c *Cluster) RaftConfiguration(t testing.TB) []RaftServer {
	t.Helper()
	servers, err := c.raftConfiguration()
	if err != nil {
		t.Fatalf("RaftConfiguration: %v", err)
	}
	return servers
}

func (c *Cluster) raftConfiguration() ([]RaftServer, error) {
	var lastErr error = errors.New("no running node")
	for _, n := range c.Running() {
		s, err := n.ctl.Logical().Read("sys/storage/raft/configuration")
		if err != nil || s == nil {
			lastErr = fmt.Errorf("%s: %v", n.Name, err)
			continue
		}
		cfg, _ := s.Data["config"].(map[string]any)
		list, _ := cfg["servers"].([]any)
		var out []RaftServer
		for _, raw := range list {
			m, _ := raw.(map[string]any)
			rs := RaftServer{}
			rs.NodeID, _ = m["node_id"].(string)
			rs.Address, _ = m["address"].(string)
			rs.Leader, _ = m["leader"].(bool)
			rs.Voter, _ = m["voter"].(bool)
			out = append(out, rs)
		}
		return out, nil
	}
	return nil, lastErr
}

// WaitHealthy waits up to timeout until every node runs and is unsealed,
// every node is a Raft voter (sys/storage/raft/configuration), every node
// has applied what the leader had committed at the start (sys/leader
// raft_applied_index), and autopilot reports every server healthy
// (sys/storage/raft/autopilot/state), so that the cluster can lose any one
// node.
func (c *Cluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var target uint64 // the leader's commit index when first seen
	for {
		why := c.unhealthy(&target)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("WaitHealthy: cluster not healthy after %s: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *Cluster) unhealthy(target *uint64) string {
	for _, n := range c.Nodes {
		if !n.Running() {
			return n.Name + " is not running"
		}
		h, err := n.ctl.Sys().Health()
		if err != nil {
			return fmt.Sprintf("%s: sys/health: %v", n.Name, err)
		}
		if !h.Initialized || h.Sealed {
			return fmt.Sprintf("%s: initialized=%v sealed=%v", n.Name, h.Initialized, h.Sealed)
		}
	}
	servers, err := c.raftConfiguration()
	if err != nil {
		return "raft configuration: " + err.Error()
	}
	voters := map[string]bool{}
	for _, s := range servers {
		if s.Voter {
			voters[s.NodeID] = true
		}
	}
	for _, n := range c.Nodes {
		if !voters[n.Name] {
			return fmt.Sprintf("%s is not a voter: %+v", n.Name, servers)
		}
	}
	active := c.activeNow()
	if active == nil {
		return "no active node"
	}
	// Every node has applied what the leader had committed when
	// WaitHealthy first found it.
	if *target == 0 {
		l, err := active.ctl.Sys().Leader()
		if err != nil || l.RaftCommittedIndex == 0 {
			return fmt.Sprintf("%s: sys/leader: %v (committed index %v)", active.Name, err, l)
		}
		*target = l.RaftCommittedIndex
	}
	for _, n := range c.Nodes {
		l, err := n.ctl.Sys().Leader()
		if err != nil {
			return fmt.Sprintf("%s: sys/leader: %v", n.Name, err)
		}
		if l.RaftAppliedIndex < *target {
			return fmt.Sprintf("%s: raft applied index %d, behind the leader's %d", n.Name, l.RaftAppliedIndex, *target)
		}
	}
	state, err := active.ctl.Sys().RaftAutopilotState()
	if err != nil || state == nil {
		return fmt.Sprintf("autopilot state: %v", err)
	}
	for _, n := range c.Nodes {
		s := state.Servers[n.Name]
		if s == nil || !s.Healthy {
			return fmt.Sprintf("autopilot: %s not healthy (%+v)", n.Name, s)
		}
	}
	return ""
}

// describe is one line per node for failure messages.
func (c *Cluster) describe() string {
	var parts []string
	for _, n := range c.Nodes {
		parts = append(parts, n.describe())
	}
	return strings.Join(parts, "; ")
}

func (n *ClusterNode) describe() string {
	if !n.Running() {
		return n.Name + " down"
	}
	h, err := n.ctl.Sys().Health()
	if err != nil {
		return fmt.Sprintf("%s (%s) health error %v", n.Name, n.Addr, err)
	}
	l, err := n.ctl.Sys().Leader()
	leader := ""
	if err == nil {
		leader = fmt.Sprintf(" is_self=%v leader=%s", l.IsSelf, l.LeaderAddress)
	}
	return fmt.Sprintf("%s (%s) sealed=%v standby=%v%s", n.Name, n.Addr, h.Sealed, h.Standby, leader)
}

// String names the node for test logs.
func (n *ClusterNode) String() string {
	if n == nil {
		return "<none>"
	}
	return fmt.Sprintf("%s (%s)", n.Name, n.Addr)
}

// startProcess starts `vault server -config=...` for the node.
func (n *ClusterNode) startProcess(t testing.TB) {
	t.Helper()
	env := append(cleanEnv(), "HOME="+n.dir)
	env = append(env, n.c.opts.Env...)
	p, err := startProcess("vault "+n.Name, n.LogPath, env, st.vaultBin,
		"server", "-config="+n.ConfigPath, "-log-level="+n.logLevel)
	if err != nil {
		t.Fatalf("cluster %s: %v", n.Name, err)
	}
	n.proc, n.Cmd = p, p.cmd
}

// waitListening waits up to 60s for the node's API to answer sys/health.
func (n *ClusterNode) waitListening(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := n.ctl.Sys().Health()
		if err == nil {
			return
		}
		if n.proc.exited() {
			t.Fatalf("cluster %s: vault exited during startup (%v); see its log below", n.Name, n.proc.waitErr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster %s: %s/v1/sys/health did not answer within 60s: %v", n.Name, n.Addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Running reports whether the node's process is running.
func (n *ClusterNode) Running() bool { return n.proc != nil && !n.proc.exited() }

// Unseal unseals the node with the cluster's key, retrying for up to 60s
// (a node that is still joining the cluster cannot take the key yet).
func (n *ClusterNode) Unseal(t testing.TB) {
	t.Helper()
	if err := n.unseal(60 * time.Second); err != nil {
		t.Fatalf("Unseal: %v; see its log below", err)
	}
}

// unseal sends the key until Vault takes it, then waits for the node to be
// unsealed without sending it again: on a node that is joining the cluster
// (retry_join) the key lets the join finish, and the node then unseals
// itself; a second key sent meanwhile makes Vault 1.21 unseal twice and run
// two standby loops, after which sys/step-down is ignored ("manual
// step-down operation already queued").
func (n *ClusterNode) unseal(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	sent := false
	for {
		if !n.Running() {
			return fmt.Errorf("%s is not running (%v)", n.Name, n.proc.waitErr)
		}
		var last string
		if !sent {
			// The node's own client: the call may wait for the join.
			s, err := n.Vault.Client.Sys().Unseal(n.c.UnsealKey)
			switch {
			case err != nil:
				last = err.Error()
			case s.Sealed:
				sent = true
				last = fmt.Sprintf("key taken, still sealed (progress %d/%d, initialized %v)", s.Progress, s.T, s.Initialized)
			default:
				return nil
			}
		} else {
			s, err := n.ctl.Sys().SealStatus()
			switch {
			case err != nil:
				last = err.Error()
			case s.Sealed:
				last = fmt.Sprintf("key taken, still sealed (progress %d/%d, initialized %v)", s.Progress, s.T, s.Initialized)
			default:
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still sealed after %s: %s", n.Name, timeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop stops the node gracefully: SIGTERM to the vault process alone, as
// `systemctl stop vault` does with HashiCorp's unit (KillMode=process), so
// that Vault steps down, seals and stops its plugins itself; then, after
// at most 30s, SIGKILL for the process group and any plugin process left.
// Its data directory is kept for Restart.
func (n *ClusterNode) Stop(t testing.TB) {
	t.Helper()
	n.proc.terminate(30 * time.Second)
}

// Restart stops the node if it still runs (gracefully, like Stop), reaps
// what is left of it (plugin processes of a killed node), starts it again
// with the same configuration and data directory, and unseals it. It does
// not wait for the node to catch up with the cluster: see WaitHealthy.
func (n *ClusterNode) Restart(t testing.TB) {
	t.Helper()
	n.proc.terminate(30 * time.Second)
	n.startProcess(t)
	n.waitListening(t)
	n.Unseal(t)
}

// Leader returns the node's sys/leader.
func (n *ClusterNode) Leader(t testing.TB) *api.LeaderResponse {
	t.Helper()
	l, err := n.ctl.Sys().Leader()
	if err != nil {
		t.Fatalf("%s: sys/leader: %v", n.Name, err)
	}
	return l
}

// NewClient returns a new API client for the node with the root token, no
// retries and the given timeout, for load generators that must not share
// the node's Client.
func (n *ClusterNode) NewClient(t testing.TB, timeout time.Duration) *api.Client {
	t.Helper()
	client, err := newAPIClient(n.Addr, timeout)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	client.SetToken(n.c.Token)
	return client
}

// MountInfo is what sys/mounts/MOUNT says about the plugin's mount.
type MountInfo struct {
	Type                 string `json:"type"`
	PluginVersion        string `json:"plugin_version"`
	RunningPluginVersion string `json:"running_plugin_version"`
	RunningSHA256        string `json:"running_sha256"`
}

// MountInfo reads sys/mounts/<mount> through this node.
func (n *ClusterNode) MountInfo(t testing.TB) MountInfo {
	t.Helper()
	s, err := n.Vault.Client.Logical().Read("sys/mounts/" + n.Mount)
	if err != nil || s == nil {
		t.Fatalf("%s: read sys/mounts/%s: %v", n.Name, n.Mount, err)
	}
	str := func(k string) string { v, _ := s.Data[k].(string); return v }
	return MountInfo{
		Type:                 str("type"),
		PluginVersion:        str("plugin_version"),
		RunningPluginVersion: str("running_plugin_version"),
		RunningSHA256:        str("running_sha256"),
	}
}
