package vm

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/hostkeys"
	"banger/internal/progress"
)

// identityTimeout bounds the agent's identity op (measured 0.14–0.3 s in a
// TCG guest).
const identityTimeout = 20 * time.Second

// resetIdentity gives a restored guest its own identity through its agent
// (whose health has answered): clock, kernel RNG reseeded with host
// entropy, hostname, a new machine-id, MAC, address and default route (and
// systemd-networkd's file, so a link change does not bring the parent's
// back), resolv.conf, and new SSH host keys made here (Debian's sshd reads
// them at each connection, so it is not restarted). Then the feature
// servers get this VM's own password and are restarted, so a child shares
// neither credentials nor sessions with its parent. known_hosts is written
// from the keys made here.
func (m *Manager) resetIdentity(ctx context.Context, v *api.VM, h *Handles, rep progress.Reporter) error {
	c, err := m.agentFor(ctx, v.ID, h)
	if err != nil {
		return err
	}
	keys, err := hostkeys.Generate()
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(v.Runtime.GuestIP)
	if err != nil {
		return fmt.Errorf("vm %s has a bad guest ip %q: %w", v.Name, v.Runtime.GuestIP, err)
	}
	gw := m.net.Gateway()
	bits := 24
	if mask, err := netip.ParseAddr(m.net.Netmask()); err == nil {
		bits = maskBits(mask.As4())
	}
	entropy := make([]byte, 256)
	mid := make([]byte, 16)
	if _, err := rand.Read(entropy); err != nil {
		return err
	}
	if _, err := rand.Read(mid); err != nil {
		return err
	}
	id := agent.Identity{
		Hostname: v.Name, MachineID: hex.EncodeToString(mid), Interface: "eth0", MAC: v.Runtime.MAC,
		Address: netip.PrefixFrom(ip, bits).String(), Gateway: gw.String(), DNS: gw.String(),
		UnixNano: time.Now().UnixNano(), Entropy: entropy, HostKeys: keys.ForAgent(),
	}
	ictx, cancel := context.WithTimeout(ctx, identityTimeout)
	res, err := c.SetIdentity(ictx, id)
	cancel()
	if err != nil {
		return err
	}
	var parts []string
	for _, s := range res.Steps {
		parts = append(parts, fmt.Sprintf("%s %.0fms", s.Name, s.MS))
	}
	m.log.Debug("identity reset", "vm", v.Name, "steps", strings.Join(parts, ", "))
	known := keys.KnownHosts(v.Runtime.GuestIP)
	if err := writeFileAtomic(filepath.Join(v.Runtime.VMDir, knownHostsName), []byte(known)); err != nil {
		return err
	}
	m.installFeatureAuth(ctx, v, h)
	if err := m.restartFeatures(ctx, v, h); err != nil {
		return fmt.Errorf("restarting the feature servers: %w", err)
	}
	rep.Detail(fmt.Sprintf("%s %s, %.0f ms in the guest (%s)", v.Name, v.Runtime.GuestIP, totalMS(res), slowest(res, 3)))
	return nil
}

func totalMS(r agent.IdentityResult) float64 {
	var n float64
	for _, s := range r.Steps {
		n += s.MS
	}
	return n
}

// slowest names the n slowest steps of an identity op with their times.
func slowest(r agent.IdentityResult, n int) string {
	steps := slices.Clone(r.Steps)
	slices.SortFunc(steps, func(a, b agent.IdentityStep) int { return cmp.Compare(b.MS, a.MS) })
	var out []string
	for _, s := range steps[:min(n, len(steps))] {
		out = append(out, fmt.Sprintf("%s %.0f", s.Name, s.MS))
	}
	return strings.Join(out, ", ")
}

func maskBits(b [4]byte) int {
	n := 0
	for _, x := range b {
		for ; x&0x80 != 0; x <<= 1 {
			n++
		}
	}
	return n
}

// restartFeatures restarts the units of v's credentialed feature servers
// (they read the password at start).
func (m *Manager) restartFeatures(ctx context.Context, v *api.VM, h *Handles) error {
	var units []string
	for _, d := range m.imageFeatures(ctx, *v) {
		if d.Auth != nil && d.Auth.Unit != "" {
			units = append(units, d.Auth.Unit)
		}
	}
	if len(units) == 0 {
		return nil
	}
	c, err := m.agentFor(ctx, v.ID, h)
	if err != nil {
		return err
	}
	errOut := &cappedBuffer{max: 4096}
	code, err := c.Exec(ctx, api.ExecRequest{Argv: append([]string{"systemctl", "try-restart"}, units...)}, nil, io.Discard, errOut)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("systemctl try-restart %s: exit %d: %s", strings.Join(units, " "), code, bytes.TrimSpace(errOut.Bytes()))
	}
	return nil
}
