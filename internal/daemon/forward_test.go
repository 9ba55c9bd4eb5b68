package daemon

import (
	"os"
	"testing"

	"banger/internal/api"
)

func TestForwardPolicy(t *testing.T) {
	root := Peer{UID: 0, Known: true}
	member := Peer{UID: os.Geteuid() + 12345, Known: true}
	web := Peer{}
	for _, c := range []struct {
		p    Peer
		req  api.ForwardRequest
		okay bool
	}{
		{root, api.ForwardRequest{HostAddr: "0.0.0.0", HostPort: 80, GuestPort: 80}, true},
		{member, api.ForwardRequest{HostPort: 8080, GuestPort: 80}, true},
		{member, api.ForwardRequest{HostAddr: "::1", HostPort: 0, GuestPort: 80}, true},
		{member, api.ForwardRequest{HostAddr: "0.0.0.0", HostPort: 8080, GuestPort: 80}, false},
		{member, api.ForwardRequest{HostAddr: "127.0.0.1", HostPort: 22, GuestPort: 80}, false},
		{web, api.ForwardRequest{HostAddr: "10.0.0.1", HostPort: 8080, GuestPort: 80}, false},
		{web, api.ForwardRequest{HostAddr: "not-an-ip", HostPort: 8080, GuestPort: 80}, false},
	} {
		err := forwardPolicy(c.p, c.req)
		if (err == nil) != c.okay {
			t.Errorf("peer %+v, %+v: %v, want allowed=%v", c.p, c.req, err, c.okay)
		}
	}
}
