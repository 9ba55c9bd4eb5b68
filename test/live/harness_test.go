// Package live holds banger's live tests: the real binaries, a real daemon
// in its own network namespace, real QEMU guests booted from the cached test
// image. They need root; each test cleans up everything it made and ends
// with a leak audit.
package live

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/disk/pool"
	"banger/internal/testimage"
)

var binDir string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("live tests need root (sudo make test-live)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "banger-live-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	root, _ := filepath.Abs("../..")
	for _, b := range []struct{ name, pkg string }{
		{"banger", "./cmd/banger"}, {"bangerd", "./cmd/bangerd"}, {"banger-agent", "./cmd/banger-agent"},
	} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b.name), b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("building %s: %v\n%s", b.name, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one banger installation: a state dir, a config and a network
// namespace in which its daemon (and so its bridge, taps, nft table and
// guests) lives.
type env struct {
	t        *testing.T
	ns       string
	stateDir string
	config   string
	image    api.Image
	pool     *pool.Pool
	// extraEnv is added to the CLI's environment (and so to a daemon the
	// CLI starts), e.g. http_proxy for image create.
	extraEnv []string
	// uplinkHost and uplinkNS are the addresses e.uplink uses (chosen up
	// front: the proxy is on banger's network_allow list, since the
	// default policy keeps guests off link-local addresses).
	uplinkHost, uplinkNS string
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newEnv makes a fresh installation with the test image registered as
// "test" (the default image).
func newEnv(t *testing.T) *env {
	t.Helper()
	img := testimage.Get(t)
	id := randHex(3)
	e := &env{t: t, ns: "bgr-" + id, stateDir: "/tmp/bgr-" + id, image: img}
	third, base := 100+mrand.IntN(100), 4*mrand.IntN(60)
	e.uplinkHost = fmt.Sprintf("169.254.%d.%d", third, base+1)
	e.uplinkNS = fmt.Sprintf("169.254.%d.%d", third, base+2)
	run(t, "ip", "netns", "add", e.ns)
	t.Cleanup(e.teardown)
	run(t, "ip", "-n", e.ns, "link", "set", "lo", "up")
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// `ip netns exec` gives the daemon a private (slave) mount namespace:
	// a pool it mounted there would vanish with it, and a restarted daemon
	// could not remount it (XFS refuses a second mount of one filesystem).
	// So the pool is mounted here, in the host's mount namespace, and the
	// daemon finds it mounted, as it does on a host after its first start.
	e.pool = &pool.Pool{Image: filepath.Join(e.stateDir, "pool.img"), MountPoint: filepath.Join(e.stateDir, "pool"), Size: 16 << 30}
	if err := e.pool.Ensure(context.Background()); err != nil {
		t.Fatalf("storage pool: %v", err)
	}
	e.config = filepath.Join(e.stateDir, "config.toml")
	cfg := fmt.Sprintf(`state_dir = %q
socket_path = %q
tap_pool_size = 2
ready_timeout = "180s"
stats_poll_interval = "2s"
default_image = "test"
memory = "512MiB"
vcpus = 1
disk_size = "1GiB"
agent_bin = %q
ssh_key_path = %q
network_allow = [%q]
`, e.stateDir, filepath.Join(e.stateDir, "bangerd.sock"), filepath.Join(binDir, "banger-agent"),
		testimage.KeyPath(testimage.CacheDir()), e.uplinkHost)
	if err := os.WriteFile(e.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.must("image", "register", "test", "--kernel", img.Kernel, "--initrd", img.Initrd,
		"--rootfs", img.Rootfs, "--work-seed", img.WorkSeed, "--vmlinux", img.Vmlinux)
	return e
}

// result of one CLI run.
type result struct {
	stdout, stderr string
	code           int
}

// banger runs the CLI inside the env's network namespace.
func (e *env) banger(args ...string) result {
	return e.bangerStdin("", args...)
}

func (e *env) bangerStdin(stdin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	full := append([]string{"netns", "exec", e.ns, filepath.Join(binDir, "banger"), "--config", e.config}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Stdin = strings.NewReader(stdin)
	if len(e.extraEnv) > 0 {
		cmd.Env = append(os.Environ(), e.extraEnv...)
	}
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("running banger %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

// must runs the CLI and fails the test on a non-zero exit.
func (e *env) must(args ...string) string {
	e.t.Helper()
	r := e.banger(args...)
	if r.code != 0 {
		e.t.Fatalf("banger %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// mustJSON runs the CLI with --json and decodes its stdout into v.
func (e *env) mustJSON(v any, args ...string) {
	e.t.Helper()
	out := e.must(append(args, "--json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		e.t.Fatalf("banger %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
