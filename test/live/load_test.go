package live

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

// 50 create/delete cycles (create --no-wait: the engine starts, the guest
// need not finish booting) leave zero residue: no VM, tap, loop device,
// engine process or VM dir, and the same nft rule count as at the start.
func TestIntegrationLiveLoadCycles(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const cycles = 50
	nft0 := e.nftObjects()
	start := time.Now()
	var createT, deleteT []time.Duration
	for i := 0; i < cycles; i++ {
		name := "cyc-" + strconv.Itoa(i)
		c0 := time.Now()
		r := e.banger("vm", "create", "--name", name, "--no-wait", "--json")
		if r.code != 0 {
			t.Fatalf("cycle %d: vm create --no-wait: exit %d\n%s", i, r.code, r.stderr)
		}
		createT = append(createT, time.Since(c0))
		var v api.VM
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.Runtime.State != api.VMStarting {
			t.Fatalf("cycle %d: want a starting VM, got %q (%v)", i, v.Runtime.State, err)
		}
		d0 := time.Now()
		e.must("vm", "delete", name)
		deleteT = append(deleteT, time.Since(d0))
		if l := e.leaks(); len(l) > 0 {
			t.Fatalf("cycle %d: leaked:\n  %s", i, strings.Join(l, "\n  "))
		}
	}
	var vms []api.VM
	e.mustJSON(&vms, "vm", "list")
	if len(vms) != 0 {
		t.Fatalf("VMs left after %d cycles: %d", cycles, len(vms))
	}
	if n := e.nftObjects(); n != nft0 {
		t.Errorf("nft objects in banger's table: %d before, %d after %d cycles", nft0, n, cycles)
	}
	t.Logf("%d cycles in %s; create --no-wait p50 %s, delete p50 %s", cycles, time.Since(start).Round(time.Millisecond),
		median(createT), median(deleteT))
}

// 8 concurrent creates with generated names all succeed (two boot at a time,
// the rest wait for a boot slot) with unique names, IPs, MACs and taps, and
// no SQLite busy error reaches the user. Not parallel: it takes the host's
// boot capacity for itself.
func TestIntegrationLiveConcurrentCreates(t *testing.T) {
	e := newEnv(t)
	const n = 8
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]result, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = e.banger("vm", "create", "--memory", "256MiB", "--json")
		}(i)
	}
	wg.Wait()
	t.Logf("%d concurrent creates (all agents ready) in %s", n, time.Since(start).Round(time.Millisecond))
	seen := map[string]map[string]bool{"name": {}, "ip": {}, "mac": {}, "tap": {}}
	unique := func(kind, v string) {
		if v == "" || seen[kind][v] {
			t.Errorf("%s %q is empty or not unique", kind, v)
		}
		seen[kind][v] = true
	}
	for i, r := range results {
		if strings.Contains(strings.ToLower(r.stderr), "busy") || strings.Contains(strings.ToLower(r.stderr), "locked") {
			t.Errorf("create %d: a database busy/locked error reached the user:\n%s", i, r.stderr)
		}
		if r.code != 0 {
			t.Errorf("create %d: exit %d\n%s", i, r.code, r.stderr)
			continue
		}
		var v api.VM
		if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
			t.Errorf("create %d: %v\n%s", i, err, r.stdout)
			continue
		}
		d, ok := e.show(v.Name)
		if !ok || d.VM.Runtime.State != api.VMRunning || !d.Alive || d.Handles == nil {
			t.Errorf("create %d: %s is not running: %+v", i, v.Name, d.VM.Runtime)
			continue
		}
		unique("name", v.Name)
		unique("ip", v.Runtime.GuestIP)
		unique("mac", v.Runtime.MAC)
		unique("tap", d.Handles.Tap)
	}
	d0 := time.Now()
	args := []string{"vm", "delete"}
	for name := range seen["name"] {
		args = append(args, name)
	}
	if len(args) > 2 {
		e.must(args...)
	}
	t.Logf("deleting %d VMs: %s", len(args)-2, time.Since(d0).Round(time.Millisecond))
	e.assertNoLeaks()
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2].Round(time.Millisecond)
}
