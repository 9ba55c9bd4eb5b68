package netw

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"banger/internal/api"
)

// assertPort checks that name is an up, isolated port of bridge br.
func assertPort(t *testing.T, name, br string) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("port %s: %v", name, err)
	}
	bridge, err := netlink.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	if link.Attrs().MasterIndex != bridge.Attrs().Index {
		t.Errorf("%s is not attached to %s", name, br)
	}
	if link.Attrs().Flags&(1<<0) == 0 { // net.FlagUp
		t.Errorf("%s is not up", name)
	}
	pi, err := netlink.LinkGetProtinfo(link)
	if err != nil || !pi.Isolated {
		t.Errorf("%s is not an isolated bridge port (err %v)", name, err)
	}
	if tap, ok := link.(*netlink.Tuntap); ok {
		if tap.Mode != netlink.TUNTAP_MODE_TAP || tap.NonPersist {
			t.Errorf("%s: mode %v nonpersist %v, want a persistent tap", name, tap.Mode, tap.NonPersist)
		}
	}
}

func TestIntegrationLifecycle(t *testing.T) {
	if !inNetns(t, nil) {
		return
	}
	ctx := context.Background()
	cfg := Config{TapPoolSize: 3}
	m := newTestManager(t, cfg)
	if _, _, err := m.AcquireTap(ctx); !api.IsFailedPrecondition(err) {
		t.Fatalf("AcquireTap before Setup: %v, want FailedPrecondition", err)
	}
	for range 2 { // idempotent
		if err := m.Setup(ctx); err != nil {
			t.Fatalf("Setup: %v", err)
		}
	}
	br, err := netlink.LinkByName("banger0")
	if err != nil || br.Type() != "bridge" {
		t.Fatalf("bridge: %v %v", br, err)
	}
	if got := br.Attrs().HardwareAddr.String(); got != bridgeMAC("banger0").String() {
		t.Errorf("bridge MAC %s, want the fixed %s", got, bridgeMAC("banger0"))
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.203.0.1/24" {
		t.Errorf("bridge addresses %v, want [10.203.0.1/24]", addrs)
	}
	if b, _ := os.ReadFile(ipForwardPath); strings.TrimSpace(string(b)) != "1" {
		t.Errorf("ip_forward = %q", b)
	}
	if ok, err := TableExists("banger"); !ok || err != nil {
		t.Errorf("table inet banger missing (err %v)", err)
	}
	taps, _ := ListBangerTaps()
	if want := []string{"tap-pool-0", "tap-pool-1", "tap-pool-2"}; !slices.Equal(taps, want) {
		t.Fatalf("taps %v, want %v", taps, want)
	}
	for _, tap := range taps {
		assertPort(t, tap, "banger0")
	}

	// three hits, then a miss
	var got []string
	for i := range 4 {
		name, hit, err := m.AcquireTap(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if hit != (i < 3) {
			t.Errorf("acquire %d: %s hit=%v", i, name, hit)
		}
		got = append(got, name)
	}
	extra := got[3]
	if !strings.HasPrefix(extra, "banger-tap-") || len(extra) > 15 {
		t.Fatalf("miss tap name %q", extra)
	}
	assertPort(t, extra, "banger0")
	if rx, tx, err := m.TapStats(extra); err != nil || rx < 0 || tx < 0 {
		t.Errorf("TapStats: %d %d %v", rx, tx, err)
	}
	if _, _, err := m.TapStats("tap-nope"); !api.IsNotFound(err) {
		t.Errorf("TapStats of missing tap: %v, want NotFound", err)
	}

	// release: the miss is deleted, the pool tap comes back
	if err := m.ReleaseTap(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(extra); !isNotFound(err) {
		t.Errorf("released non-pool tap %s still exists", extra)
	}
	if err := m.ReleaseTap(ctx, "tap-pool-1"); err != nil {
		t.Fatal(err)
	}
	if name, hit, _ := m.AcquireTap(ctx); name != "tap-pool-1" || !hit {
		t.Errorf("after release got %s hit=%v, want tap-pool-1 hit", name, hit)
	}
	if err := m.ReleaseTap(ctx, "eth0"); !api.IsInvalid(err) {
		t.Errorf("ReleaseTap(eth0): %v, want Invalid", err)
	}

	// a deleted pool tap is refilled asynchronously
	if err := m.ReleaseTap(ctx, "tap-pool-2"); err != nil {
		t.Fatal(err)
	}
	if err := m.DeleteTap(ctx, "tap-pool-2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "tap-pool-2 refilled", func() bool { return m.FreePoolTaps() == 1 })
	assertPort(t, "tap-pool-2", "banger0")

	// daemon restart: Close keeps everything, a new Manager re-adopts it and
	// MarkInUse keeps the taps of surviving VMs
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if taps2, _ := ListBangerTaps(); !slices.Equal(taps2, taps) {
		t.Errorf("after Close taps %v, want %v", taps2, taps)
	}
	m2 := newTestManager(t, cfg)
	m2.MarkInUse("tap-pool-0")
	m2.MarkInUse("tap-pool-1")
	if err := m2.Setup(ctx); err != nil {
		t.Fatalf("Setup after restart: %v", err)
	}
	if name, hit, _ := m2.AcquireTap(ctx); name != "tap-pool-2" || !hit {
		t.Errorf("after restart got %s hit=%v, want tap-pool-2", name, hit)
	}
	if name, hit, _ := m2.AcquireTap(ctx); hit {
		t.Errorf("after restart got %s hit=%v, want a miss", name, hit)
	}

	if err := m2.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	assertNothingLeft(t, "banger0", "banger")
}

func TestIntegrationSetupErrors(t *testing.T) {
	if !inNetns(t, nil) {
		return
	}
	ctx := context.Background()

	t.Run("bridge name taken by a non-bridge", func(t *testing.T) {
		run(t, "ip", "link", "add", "taken0", "type", "veth", "peer", "name", "taken0p")
		defer run(t, "ip", "link", "del", "taken0")
		m := newTestManager(t, Config{Bridge: "taken0", TapPoolSize: 1})
		err := m.Setup(ctx)
		if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "ip link del taken0") {
			t.Fatalf("Setup: %v, want FailedPrecondition with the fix", err)
		}
	})

	t.Run("subnet overlaps another interface", func(t *testing.T) {
		run(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
		defer run(t, "ip", "link", "del", "lan0")
		run(t, "ip", "addr", "add", "10.203.0.77/16", "dev", "lan0")
		run(t, "ip", "link", "set", "lan0", "up")
		m := newTestManager(t, Config{TapPoolSize: 1})
		err := m.Setup(ctx)
		if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "lan0") ||
			api.AsError(err).Fix == "" {
			t.Fatalf("Setup: %v, want FailedPrecondition naming lan0 with a fix", err)
		}
		assertNothingLeft(t, "banger0", "banger")
	})

	t.Run("no tun device", func(t *testing.T) {
		old := tunPath
		tunPath = "/dev/net/does-not-exist"
		defer func() { tunPath = old }()
		m := newTestManager(t, Config{TapPoolSize: 1})
		err := m.Setup(ctx)
		if !api.IsUnavailable(err) || api.AsError(err).Fix != "modprobe tun" {
			t.Fatalf("Setup: %v, want Unavailable with fix modprobe tun", err)
		}
	})

	// A failure after any step leaves nothing behind, ip_forward included.
	for _, step := range []string{"bridge", "forward", "nft", "taps", "dns"} {
		t.Run("revert after "+step, func(t *testing.T) {
			if err := os.WriteFile(ipForwardPath, []byte("0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			failAt = step
			defer func() { failAt = "" }()
			m := newTestManager(t, Config{TapPoolSize: 2})
			if err := m.Setup(ctx); err == nil || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("Setup: %v, want the injected failure", err)
			}
			assertNothingLeft(t, "banger0", "banger")
			if b, _ := os.ReadFile(ipForwardPath); strings.TrimSpace(string(b)) != "0" {
				t.Errorf("ip_forward left at %q", b)
			}
			// and the port is free again: a real Setup works
			failAt = ""
			if err := m.Setup(ctx); err != nil {
				t.Fatalf("Setup after failed Setup: %v", err)
			}
			if err := m.Teardown(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestIntegrationTeardownOnlyOwnTable(t *testing.T) {
	if !inNetns(t, nil) {
		return
	}
	ctx := context.Background()
	// someone else's table must survive Setup and Teardown
	run(t, "nft", "add", "table", "inet", "other")
	run(t, "nft", "add", "chain", "inet", "other", "c", "{ type filter hook forward priority 0; policy accept; }")
	m := newTestManager(t, Config{TapPoolSize: 1, Subnet: netip.MustParsePrefix("10.77.0.0/24")})
	if err := m.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if ok, err := TableExists("other"); !ok || err != nil {
		t.Errorf("table inet other was removed (err %v)", err)
	}
	assertNothingLeft(t, "banger0", "banger")
}

// BenchmarkAcquireTapPoolHit measures AcquireTap when a pool tap is free.
func BenchmarkAcquireTapPoolHit(b *testing.B) {
	if !benchInNetns(b) {
		return
	}
	benchAcquire(b, 1, true)
}

// BenchmarkAcquireTapPoolMiss measures AcquireTap creating a fresh tap.
func BenchmarkAcquireTapPoolMiss(b *testing.B) {
	if !benchInNetns(b) {
		return
	}
	benchAcquire(b, 0, false)
}

func benchAcquire(b *testing.B, pool int, wantHit bool) {
	ctx := context.Background()
	m := newTestManager(b, Config{TapPoolSize: pool})
	m.log = slog.New(slog.DiscardHandler)
	if err := m.Setup(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		name, hit, err := m.AcquireTap(ctx)
		if err != nil || hit != wantHit {
			b.Fatalf("AcquireTap: %s hit=%v err=%v", name, hit, err)
		}
		b.StopTimer()
		if err := m.ReleaseTap(ctx, name); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
