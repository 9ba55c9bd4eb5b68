package netw

import (
	"io"
	"net"
	"testing"
	"time"

	"banger/internal/api"
)

// TestIntegrationPolicyCost measures TCP throughput and connect latency
// from guest A to the "internet" with banger's tables (A bound in mode
// internet: the bridge port chain, the guests map, ~15 rules of its policy
// chain) and with no banger table at all (plain forwarding, the upstream
// routing the VM subnet back). It reports numbers; it fails only when the
// rules cost more than half the throughput.
func TestIntegrationPolicyCost(t *testing.T) {
	if !inNetns(t, prepGuard) {
		return
	}
	e := setupGuard(t, api.NetPolicy{})
	inNS(t, e.up, func() {
		ln := listen(t, internetIP+":9999")
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
			}
		}()
	})
	run(t, "ip", "-n", e.up, "route", "add", "10.203.0.0/24", "via", uplinkHost)
	measure := func(label string) float64 {
		var mbps float64
		var rtt time.Duration
		inNS(t, e.ga, func() {
			const conns = 50
			start := time.Now()
			for range conns {
				c, err := net.DialTimeout("tcp", internetIP+":9999", time.Second)
				if err != nil {
					t.Fatalf("%s: dial: %v", label, err)
				}
				c.Close()
			}
			rtt = time.Since(start) / conns
			c, err := net.DialTimeout("tcp", internetIP+":9999", time.Second)
			if err != nil {
				t.Fatalf("%s: dial: %v", label, err)
			}
			defer c.Close()
			buf := make([]byte, 64<<10)
			const total = 256 << 20
			start = time.Now()
			for sent := 0; sent < total; sent += len(buf) {
				if _, err := c.Write(buf); err != nil {
					t.Fatalf("%s: write: %v", label, err)
				}
			}
			mbps = total * 8 / time.Since(start).Seconds() / 1e6
		})
		t.Logf("MEASURE %s: %.0f Mbit/s, connect %v", label, mbps, rtt)
		return mbps
	}
	with := measure("banger's rules (mode internet)")
	if err := deleteTable(e.m.Config().Table); err != nil {
		t.Fatal(err)
	}
	without := measure("no banger table")
	if with < without/2 {
		t.Errorf("the rules halve throughput: %.0f vs %.0f Mbit/s", with, without)
	}
}
