package netw

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// The integration tests run in a fresh network namespace: the test process
// re-executes itself under `ip netns exec <ns>` with envNetns set, so every
// thread (DNS server, refiller, netlink sockets) lives in that namespace and
// nothing can leak onto the host. The outer process watches the host's root
// namespace the whole time and fails if a banger interface or table appears.
const envNetns = "BANGER_NETW_TEST_NETNS"

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requireNetnsCaps skips when this host cannot run the namespace tests.
func requireNetnsCaps(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces: run the tests as root (sudo go test ./internal/netw/)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command: apt-get install iproute2")
	}
	if _, err := os.Stat(tunPath); err != nil {
		t.Skip("no /dev/net/tun: modprobe tun")
	}
}

// run runs a command, failing the test on error.
func run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// addNetns creates a named network namespace, deleted at cleanup.
func addNetns(t testing.TB, name string) {
	t.Helper()
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("deleting netns %s: %v %s", name, err, out)
		}
	})
}

// hostState is what the host's root namespace must never gain.
func hostState() (string, error) {
	taps, err := ListBangerTaps()
	if err != nil {
		return "", err
	}
	_, brErr := netlink.LinkByName(DefaultBridge)
	table, err := TableExists(DefaultTable)
	if err != nil {
		return "", err
	}
	brnf, _ := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	fwd, _ := os.ReadFile(ipForwardPath)
	return fmt.Sprintf("taps=%v bridge=%v table=%v br-nf-call-iptables=%q ip_forward=%q",
		taps, brErr == nil, table, brnf, fwd), nil
}

// inNetns reports whether the caller is the re-executed child inside the
// test namespace. Otherwise it creates the namespace (and whatever prep
// adds: more namespaces, veths), re-runs the calling test or benchmark
// inside it, relays its output, fails on its failure and returns false.
func inNetns(tb testing.TB, prep func(tb testing.TB, ns string) []string, args ...string) bool {
	tb.Helper()
	return inNetnsOut(tb, prep, nil, args...)
}

func inNetnsOut(tb testing.TB, prep func(tb testing.TB, ns string) []string, bench *string, args ...string) bool {
	tb.Helper()
	if os.Getenv(envNetns) != "" {
		return true
	}
	requireNetnsCaps(tb)
	before, err := hostState()
	if err != nil {
		tb.Fatal(err)
	}
	ns := "banger-t-" + randHex(4)
	addNetns(tb, ns)
	env := append(os.Environ(), envNetns+"="+ns)
	if prep != nil {
		env = append(env, prep(tb, ns)...)
	}
	stopWatch := watchHost(tb, before)
	defer stopWatch()

	if len(args) == 0 {
		args = []string{"-test.run", "^" + regexp.QuoteMeta(tb.Name()) + "$", "-test.v", "-test.count=1"}
	}
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, exe}, args...)...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	tb.Logf("inside netns %s:\n%s", ns, out)
	if err != nil {
		tb.Fatalf("test inside netns %s failed: %v", ns, err)
	}
	if _, isB := tb.(*testing.B); !isB &&
		(strings.Contains(string(out), "--- SKIP") || strings.Contains(string(out), "no tests to run")) {
		tb.Fatalf("test inside netns %s did not run", ns)
	}
	if bench != nil {
		*bench = string(out)
	}
	stopWatch()
	if after, err := hostState(); err != nil || after != before {
		tb.Errorf("host root netns changed: before %s, after %s (err %v)", before, after, err)
	}
	return false
}

// watchHost polls the host's root namespace until the returned func is
// called and fails the test if its banger state changes.
func watchHost(tb testing.TB, before string) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		runtime.LockOSThread() // stay in the root netns whatever else happens
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if now, err := hostState(); err == nil && now != before {
				tb.Errorf("host root netns changed during the test: before %s, now %s", before, now)
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// inNS runs fn with the calling goroutine's thread switched into the named
// namespace; sockets fn opens belong to that namespace.
func inNS(t testing.TB, name string, fn func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("opening netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- err
			return
		}
		defer func() {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread() // else the thread dies with the goroutine
			}
		}()
		fn()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// newTestManager makes a Manager for the current (test) namespace, torn
// down at cleanup.
func newTestManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	if cfg.DNSUpstreams == nil {
		cfg.DNSUpstreams = []string{}
	}
	m, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Teardown(context.Background()) })
	return m
}

// assertNothingLeft fails when any banger interface, bridge or table exists
// in the current namespace.
func assertNothingLeft(t testing.TB, bridge, table string) {
	t.Helper()
	taps, err := ListBangerTaps()
	if err != nil || len(taps) != 0 {
		t.Errorf("banger taps left: %v (err %v)", taps, err)
	}
	if _, err := netlink.LinkByName(bridge); !isNotFound(err) {
		t.Errorf("bridge %s left (err %v)", bridge, err)
	}
	if ok, err := TableExists(table); ok || err != nil {
		t.Errorf("nft table %s left (err %v)", table, err)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func linkNames() []string {
	links, _ := netlink.LinkList()
	var out []string
	for _, l := range links {
		out = append(out, l.Attrs().Name)
	}
	slices.Sort(out)
	return out
}

var (
	benchMu      sync.Mutex
	benchResults = map[string]float64{} // benchmark name → ns/op measured inside
)

var nsPerOpRE = regexp.MustCompile(`\s([0-9.]+) ns/op`)

// benchInNetns reports whether the caller runs inside the test namespace.
// Outside, it runs the benchmark once inside a fresh namespace and reports
// the ns/op measured there as this benchmark's result.
func benchInNetns(b *testing.B) bool {
	if os.Getenv(envNetns) != "" {
		return true
	}
	b.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	v, ok := benchResults[b.Name()]
	if !ok {
		var out string
		inNetnsOut(b, nil, &out, "-test.run", "^$", "-test.bench", "^"+regexp.QuoteMeta(b.Name())+"$",
			"-test.benchtime", "200x", "-test.count=1")
		mm := nsPerOpRE.FindStringSubmatch(out)
		if mm == nil {
			b.Fatalf("no ns/op in the output from inside the netns")
		}
		v, _ = strconv.ParseFloat(mm[1], 64)
		benchResults[b.Name()] = v
	}
	for range b.N {
	}
	b.ReportMetric(v, "ns/op")
	return false
}
