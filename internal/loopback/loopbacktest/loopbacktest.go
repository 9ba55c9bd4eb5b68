// Package loopbacktest is the one test of a listener opened through
// loopback.Listen (web UI, metrics): loopback names pass, other addresses
// need allowRemote, a bad address is Invalid, and every refusal has a fix.
package loopbacktest

import (
	"net"
	"testing"

	"banger/internal/api"
)

// Listen checks listen; noPort is an address without a port, e.g. "7070".
func Listen(t *testing.T, listen func(addr string, allowRemote bool) (net.Listener, error), noPort string) {
	t.Helper()
	tests := []struct {
		addr   string
		remote bool
		kind   api.Kind // "" = success
	}{
		{"127.0.0.1:0", false, ""},
		{"localhost:0", false, ""},
		{"0.0.0.0:0", false, api.KindFailedPrecondition},
		{":0", false, api.KindFailedPrecondition},
		{"192.0.2.1:0", false, api.KindFailedPrecondition},
		{noPort, false, api.KindInvalid},
		{"0.0.0.0:0", true, ""},
	}
	for _, tt := range tests {
		ln, err := listen(tt.addr, tt.remote)
		if tt.kind == "" {
			if err != nil {
				t.Errorf("Listen(%q, %v): %v", tt.addr, tt.remote, err)
				continue
			}
			ln.Close()
			continue
		}
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%q, %v) succeeded, want %s", tt.addr, tt.remote, tt.kind)
			continue
		}
		if api.KindOf(err) != tt.kind || api.AsError(err).Fix == "" {
			t.Errorf("Listen(%q, %v) = %v (kind %s), want %s with a fix", tt.addr, tt.remote, err, api.KindOf(err), tt.kind)
		}
	}
}
