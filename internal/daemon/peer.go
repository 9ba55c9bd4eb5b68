package daemon

import (
	"context"
	"net"
	"net/http"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"banger/internal/api"
)

// Peer is who is on the other end of a request: the uid, gid and pid the
// kernel reports for the Unix socket's peer (SO_PEERCRED, taken when the
// connection is accepted, so a client cannot change it later). Known is
// false for requests that did not come through the socket — the web UI
// mounts the daemon's handler in-process, and a browser has no uid: it is
// treated as an unprivileged caller, whoever holds the token.
type Peer struct {
	UID, GID, PID int
	Known         bool
}

type peerKey struct{}

// peerContext is the socket server's ConnContext hook: it reads the peer's
// credentials once per connection and puts them in every request's
// context. A connection whose credentials cannot be read carries no Peer
// (an unprivileged caller).
func peerContext(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || credErr != nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid), Known: true})
}

// PeerOf returns the request's peer (Known false when it has none).
func PeerOf(ctx context.Context) Peer {
	p, _ := ctx.Value(peerKey{}).(Peer)
	return p
}

// mayOpenHostFiles reports whether the peer may have the daemon open host
// files it names: root, or the daemon's own uid (which can read them
// anyway). Everyone else — group members of the socket, web UI users —
// may name nothing the daemon would open with its privileges.
func (p Peer) mayOpenHostFiles() bool {
	return p.Known && (p.UID == 0 || p.UID == os.Geteuid())
}

// checkHostPaths is the host-path policy of requests that name files on
// the host: the daemon opens them with its own privileges, so only a peer
// that could read them itself may name them. what names the request, fix
// says what an unprivileged caller does instead. Nothing is opened before
// this check passes.
func checkHostPaths(r *http.Request, what string, paths []string, fix string) error {
	if len(paths) == 0 {
		return nil
	}
	p := PeerOf(r.Context())
	if p.mayOpenHostFiles() {
		return nil
	}
	who := "a web UI caller"
	if p.Known {
		who = "uid " + strconv.Itoa(p.UID)
	}
	return api.Invalid("%s names host files (%s) that the daemon would open as root; %s may not", what, paths[0], who).
		WithFix(fix)
}
