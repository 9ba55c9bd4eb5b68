package live

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/api"
)

// A real guest under the default policy reaches what network_allow lists
// (the uplink proxy, on a link-local address the default otherwise
// denies); `vm policy --mode none` cuts it off at once without a restart
// and counts the drops, `vm policy --allow` opens exactly that address
// again; the host still reaches the guest's sshd through the anti-spoofing
// rules, and banger's DNS still answers .vm names in mode none.
func TestIntegrationLiveNetPolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	proxy := e.uplink(t)
	host, portStr, err := net.SplitHostPort(strings.TrimPrefix(proxy, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	name := "np-" + randHex(2)
	if r := e.banger("vm", "create", "--name", name); r.code != 0 {
		t.Fatalf("vm create: exit %d\n%s", r.code, r.stderr)
	}
	if !e.guestTCP(name, host, port) {
		t.Fatalf("mode internet: the guest cannot reach the allow-listed uplink %s:%d", host, port)
	}
	if r := e.banger("vm", "ssh", name, "--", "true"); r.code != 0 {
		t.Errorf("vm ssh through the anti-spoofing rules: exit %d\n%s", r.code, r.stderr)
	}
	// vm ssh trusted the key the agent reported, written by banger, not
	// whatever answered first
	var d0 api.VMDetail
	e.mustJSON(&d0, "vm", "show", name)
	kh, err := os.ReadFile(filepath.Join(d0.VM.Runtime.VMDir, "known_hosts"))
	guestKey := strings.Fields(e.must("vm", "exec", name, "--", "cat", "/etc/ssh/ssh_host_ed25519_key.pub"))
	if err != nil || len(guestKey) < 2 || !strings.Contains(string(kh), d0.VM.Runtime.GuestIP+" "+guestKey[0]+" "+guestKey[1]) {
		t.Errorf("known_hosts %q (err %v) does not hold the guest's key %q", kh, err, guestKey)
	}

	// the host's extra CAs (guest_ca_certs, default /usr/local/share/
	// ca-certificates/*.crt) are in the guest's bundle and listed by vm show
	if hostCAs, _ := filepath.Glob("/usr/local/share/ca-certificates/*.crt"); len(hostCAs) > 0 {
		if len(d0.HostCAs) != len(hostCAs) {
			t.Errorf("vm show host_cas = %v, want %v", d0.HostCAs, hostCAs)
		}
		pemData, _ := os.ReadFile(hostCAs[0])
		lines := strings.Split(strings.TrimSpace(string(pemData)), "\n")
		probe := lines[len(lines)/2] // a base64 line from the middle of the certificate
		out := e.must("vm", "exec", name, "--", "sh", "-c", "grep -c -F '"+probe+"' /etc/ssl/certs/ca-certificates.crt || true")
		if strings.TrimSpace(out) == "0" {
			t.Errorf("the guest's bundle lacks the host CA %s", hostCAs[0])
		}
	}

	var st api.NetStatus
	e.mustJSON(&st, "vm", "policy", name, "--mode", "none")
	if st.Policy.Mode != api.NetNone || !st.Applied {
		t.Errorf("vm policy --mode none: %+v", st)
	}
	if e.guestTCP(name, host, port) {
		t.Errorf("mode none: the guest still reaches %s:%d", host, port)
	}
	out := e.must("vm", "exec", name, "--", "sh", "-c", "getent hosts "+name+".vm || echo unresolved")
	if !strings.Contains(out, name) {
		t.Errorf("mode none: %s.vm does not resolve in the guest: %q", name, out)
	}
	var d api.VMDetail
	e.mustJSON(&d, "vm", "show", name)
	if d.Net == nil || d.Net.Denied == 0 {
		t.Errorf("vm show after denied connections: net %+v, want denied > 0", d.Net)
	}
	r := e.banger("vm", "policy", name, "--allow", "10.0.0.300/8")
	if r.code == 0 || !strings.Contains(r.stderr, "10.0.0.300/8") {
		t.Errorf("a bad policy: exit %d, stderr %q; want an error naming the entry", r.code, r.stderr)
	}
	e.mustJSON(&st, "vm", "policy", name, "--allow", host+":"+portStr)
	if !e.guestTCP(name, host, port) {
		t.Errorf("--allow %s:%d: the guest cannot reach it", host, port)
	}
	e.must("vm", "delete", name)
}
