package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/store"
)

// databaseCheck opens the database read-only (never creating it) and
// reports its migration level.
func databaseCheck(ctx context.Context, path string) api.Check {
	ch := api.Check{Name: CheckDatabase}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ch.Status = api.CheckOK
		ch.Detail = path + " not created yet; the daemon creates it on first start"
		return ch
	case err == nil && st.Mode().IsRegular() && st.Size() == 0:
		ch.Status = api.CheckOK
		ch.Detail = path + " is empty; the daemon initialises it on start"
		return ch
	}
	moveAside := fmt.Sprintf("stop bangerd and move %s aside (mv %s %s.broken); the daemon creates a fresh one", path, path, path)
	s, err := store.OpenReadOnly(ctx, path)
	if err != nil {
		return dbError(ch, path, err, moveAside)
	}
	defer s.Close()
	info, err := s.SchemaInfo(ctx)
	if err != nil {
		return dbError(ch, path, err, moveAside)
	}
	ch.Status = api.CheckOK
	ch.Detail = fmt.Sprintf("%s: schema migration %d of %d", path, info.Current, info.Latest)
	switch {
	case len(info.Unknown) > 0:
		ch.Status = api.CheckWarn
		ch.Detail += fmt.Sprintf("; migrations %v were written by a newer banger", info.Unknown)
		ch.Fix = "upgrade banger to the version that last ran the daemon; this one may misread the database"
	case info.Current < info.Latest:
		ch.Detail += "; the daemon applies the rest when it starts"
	}
	return ch
}

// dbError reports a database that cannot be read. Permission problems get
// their own fix; everything else is treated as corrupt.
func dbError(ch api.Check, path string, err error, moveAside string) api.Check {
	ch.Status = api.CheckFail
	ch.Detail = api.AsError(err).Message
	if errors.Is(err, fs.ErrPermission) {
		ch.Fix = "run banger doctor as root (the database is only readable by root)"
		return ch
	}
	if !strings.Contains(ch.Detail, "corrupt") {
		ch.Detail = fmt.Sprintf("database %s is unreadable: %s", path, ch.Detail)
	}
	ch.Fix = moveAside
	return ch
}

// dnsCheck says how the host resolves <vm>.vm names through banger's DNS
// server on the bridge gateway, via systemd-resolved.
func dnsCheck(ctx context.Context, cfg config.Config) api.Check {
	bridge, gw := cfg.BridgeName, cfg.Gateway()
	hint := fmt.Sprintf("resolvectl dns %s %s; resolvectl domain %s ~vm", bridge, gw, bridge)
	ch := api.Check{Name: CheckDNS, Status: api.CheckOK, Fix: hint}
	if _, err := os.Stat(filepath.Join("/sys/class/net", bridge)); err != nil {
		ch.Detail = fmt.Sprintf("bridge %s is not up yet (bangerd creates it); to resolve <vm>.vm names from the host, point systemd-resolved at banger's DNS on %s", bridge, gw)
		return ch
	}
	resolvectl, err := exec.LookPath("resolvectl")
	if err != nil {
		ch.Detail = fmt.Sprintf("systemd-resolved not installed; banger's DNS answers on %s (dig @%s NAME.vm)", gw, gw)
		return ch
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, resolvectl, "dns", bridge).CombinedOutput()
	if err != nil {
		ch.Detail = fmt.Sprintf("systemd-resolved not reachable (%v); banger's DNS answers on %s (dig @%s NAME.vm)", err, gw, gw)
		return ch
	}
	if strings.Contains(string(out), gw.String()) {
		ch.Detail = fmt.Sprintf("systemd-resolved sends queries for %s to %s", bridge, gw)
		ch.Fix = ""
		return ch
	}
	ch.Status = api.CheckWarn
	ch.Detail = fmt.Sprintf("systemd-resolved does not use banger's DNS (%s) for %s: <vm>.vm names do not resolve on the host", gw, bridge)
	return ch
}

// sshKeyCheck looks at the private key banger uses to reach guests.
func sshKeyCheck(path string) api.Check {
	ch := api.Check{Name: CheckSSHKey}
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		ch.Status = api.CheckWarn
		ch.Detail = path + " does not exist yet: created on first use"
		ch.Fix = fmt.Sprintf("nothing to do (or create it now: ssh-keygen -t ed25519 -N '' -f %s)", path)
	case err != nil:
		ch.Status, ch.Detail = api.CheckFail, fmt.Sprintf("ssh key %s: %v", path, err)
		ch.Fix = "run banger doctor as root"
	case !st.Mode().IsRegular():
		ch.Status, ch.Detail = api.CheckFail, path+" is not a regular file"
		ch.Fix = fmt.Sprintf("move %s aside; banger creates a new key on first use", path)
	case st.Mode().Perm() != 0o600:
		ch.Status = api.CheckWarn
		ch.Detail = fmt.Sprintf("%s has mode %04o; ssh refuses keys readable by others", path, st.Mode().Perm())
		ch.Fix = "chmod 600 " + path
	default:
		ch.Status, ch.Detail = api.CheckOK, path+" (mode 0600)"
	}
	return ch
}
