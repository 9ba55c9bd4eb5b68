package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/internal/api"
)

// SSH host keys: each VM makes its own at first boot (image bake drop-in).
// The host learns them through the VM's agent, a channel no other guest
// can speak on, and writes <vm dir>/known_hosts itself, so `vm ssh` checks
// the key strictly from the first connection instead of trusting whoever
// answers on the VM's address first.
//
// What the guest sends back is untrusted: at most maxHostKeyOutput bytes,
// at most maxHostKeys keys, each line must parse as an authorized-keys
// public key; anything else is an error and no file is written.
const (
	maxHostKeyOutput = 16 << 10
	maxHostKeys      = 8
	knownHostsName   = "known_hosts"
)

// KnownHosts learns a running VM's SSH host keys through its agent and
// writes its known_hosts file (0600, replaced atomically).
func (m *Manager) KnownHosts(ctx context.Context, name string) (api.KnownHosts, error) {
	v, err := m.getVM(ctx, name)
	if err != nil {
		return api.KnownHosts{}, err
	}
	h, alive := m.vmAlive(v)
	if !alive || v.Runtime.State != api.VMRunning {
		return api.KnownHosts{}, api.FailedPrecondition("vm %q is %s, not running", v.Name, v.Runtime.State).
			WithAction("vm start", v.Name)
	}
	c, err := m.agentFor(ctx, v.ID, h)
	if err != nil {
		return api.KnownHosts{}, api.Unavailable("connecting to the agent of vm %q: %w", v.Name, err)
	}
	out := &cappedBuffer{max: maxHostKeyOutput}
	code, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub"}}, nil, out, &cappedBuffer{max: 4096})
	if err != nil {
		return api.KnownHosts{}, api.Unavailable("reading the ssh host keys of vm %q: %w", v.Name, err)
	}
	if code != 0 || out.over {
		return api.KnownHosts{}, api.FailedPrecondition("vm %q has no readable ssh host key (exit %d)", v.Name, code).
			WithFix("check that sshd runs in the guest (systemctl status ssh)")
	}
	lines, err := hostKeyLines(v.Runtime.GuestIP, out.Bytes())
	if err != nil {
		return api.KnownHosts{}, fmt.Errorf("vm %q: %w", v.Name, err)
	}
	path := filepath.Join(v.Runtime.VMDir, knownHostsName)
	if err := writeFileAtomic(path, []byte(strings.Join(lines, "\n")+"\n")); err != nil {
		return api.KnownHosts{}, err
	}
	return api.KnownHosts{Path: path, Keys: lines}, nil
}

// hostKeyLines turns the guest's public key files into known_hosts lines
// for ip.
func hostKeyLines(ip string, data []byte) ([]string, error) {
	var lines []string
	for len(bytes.TrimSpace(data)) > 0 {
		pub, _, opts, rest, err := ssh.ParseAuthorizedKey(data)
		if err != nil {
			return nil, api.Invalid("the guest sent an unparsable ssh host key: %v", err)
		}
		if len(opts) > 0 {
			return nil, api.Invalid("the guest sent an ssh host key with options %q", opts)
		}
		if len(lines) == maxHostKeys {
			return nil, api.Invalid("the guest sent more than %d ssh host keys", maxHostKeys)
		}
		lines = append(lines, ip+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub))))
		data = rest
	}
	if len(lines) == 0 {
		return nil, api.FailedPrecondition("the guest has no ssh host key").
			WithFix("check that sshd runs in the guest (systemctl status ssh)")
	}
	return lines, nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replacing %s: %w", path, err)
	}
	return nil
}

// cappedBuffer keeps at most max bytes and notes when more came.
type cappedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		p = p[:max(room, 0)]
	}
	b.Buffer.Write(p)
	return n, nil
}
