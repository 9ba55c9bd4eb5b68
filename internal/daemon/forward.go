package daemon

import (
	"net/http"
	"net/netip"
	"strconv"

	"banger/internal/api"
)

func (d *Daemon) addForward(w http.ResponseWriter, r *http.Request) error {
	var req api.ForwardRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := forwardPolicy(PeerOf(r.Context()), req); err != nil {
		return err
	}
	f, err := d.vms.AddForward(r.Context(), r.PathValue("name"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, f)
	return nil
}

func (d *Daemon) removeForward(w http.ResponseWriter, r *http.Request) error {
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		return api.Invalid("%q is not a host port", r.PathValue("port"))
	}
	if err := d.vms.RemoveForward(r.Context(), r.PathValue("name"), port); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// forwardPolicy: the daemon listens for the forward with its own (root)
// privileges, so a caller that is not root or the daemon's uid (a socket
// group member, a web UI user) may only ask for a loopback address and an
// unprivileged port: it cannot expose a guest on the host's network or take
// a port below 1024 through the daemon.
func forwardPolicy(p Peer, req api.ForwardRequest) error {
	if p.mayOpenHostFiles() {
		return nil
	}
	addr := req.HostAddr
	if addr == "" {
		addr = "127.0.0.1"
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return api.Invalid("host address %q is not an IP address", req.HostAddr)
	}
	if !ip.IsLoopback() {
		return api.FailedPrecondition("only root may forward on %s (not a loopback address)", addr).
			WithFix("forward on 127.0.0.1, or run the command with sudo")
	}
	if req.HostPort != 0 && req.HostPort < 1024 {
		return api.FailedPrecondition("only root may forward host port %d (below 1024)", req.HostPort).
			WithFix("use a host port of 1024 or more, or 0 for a free one")
	}
	return nil
}
