package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// identityEnv is what the identity steps act on: the guest's files under
// root ("/" in a guest), commands through run, and the kernel through the
// other functions. Tests give a temp root and fakes.
type identityEnv struct {
	root        string
	run         func(ctx context.Context, argv ...string) ([]byte, error)
	setClock    func(time.Time) error
	addEntropy  func([]byte) error
	setHostname func(string) error
	setLink     func(Identity) error
}

// guestIdentityEnv acts on the running guest.
func guestIdentityEnv() *identityEnv {
	return &identityEnv{
		root: "/", run: runCommand, setClock: func(t time.Time) error { return setClock(t) },
		addEntropy: addEntropy, setHostname: func(h string) error { return unix.Sethostname([]byte(h)) },
		setLink: setLink,
	}
}

// identityTimeout bounds a whole identity request in the guest.
const identityTimeout = 60 * time.Second

// identitySteps run in this order; the first failure ends the request.
var identitySteps = []struct {
	name string
	do   func(e *identityEnv, ctx context.Context, id Identity) error
}{
	{"clock", func(e *identityEnv, _ context.Context, id Identity) error {
		return e.setClock(time.Unix(0, id.UnixNano))
	}},
	{"entropy", func(e *identityEnv, _ context.Context, id Identity) error { return e.addEntropy(id.Entropy) }},
	{"hostname", (*identityEnv).hostname},
	{"machine-id", (*identityEnv).machineID},
	{"networkd-file", (*identityEnv).networkdFile},
	{"interface", func(e *identityEnv, _ context.Context, id Identity) error { return e.setLink(id) }},
	{"networkd-reload", (*identityEnv).networkdReload},
	{"resolv", (*identityEnv).resolv},
	{"host-keys", (*identityEnv).hostKeys},
	{"restart", (*identityEnv).restart},
}

// apply runs the steps on a validated id and reports each one's time.
func (e *identityEnv) apply(ctx context.Context, id Identity) IdentityResult {
	res := IdentityResult{OK: true}
	for _, s := range identitySteps {
		began := time.Now()
		err := s.do(e, ctx, id)
		st := IdentityStep{Name: s.name, MS: float64(time.Since(began).Microseconds()) / 1000}
		if err != nil {
			st.Error = err.Error()
			res.Steps = append(res.Steps, st)
			return IdentityResult{Steps: res.Steps, Step: s.name, Error: err.Error()}
		}
		res.Steps = append(res.Steps, st)
	}
	return res
}

func (e *identityEnv) path(p string) string { return filepath.Join(e.root, p) }

// hostname sets the kernel's hostname, /etc/hostname and the 127.0.1.1 line
// of /etc/hosts (banger-dns wrote the parent's there).
func (e *identityEnv) hostname(_ context.Context, id Identity) error {
	if err := e.setHostname(id.Hostname); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := replaceFile(e.path("etc/hostname"), 0o644, []byte(id.Hostname+"\n")); err != nil {
		return err
	}
	hosts, err := readBounded(e.path("etc/hosts"), 1<<20)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	entry := "127.0.1.1 " + id.Hostname + ".vm " + id.Hostname
	var out []string
	found := false
	for _, l := range strings.Split(strings.TrimRight(string(hosts), "\n"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "127.0.1.1" {
			if !found {
				out = append(out, entry)
			}
			found = true
			continue
		}
		if l != "" || len(out) > 0 {
			out = append(out, l)
		}
	}
	if !found {
		out = append(out, entry)
	}
	return replaceFile(e.path("etc/hosts"), 0o644, []byte(strings.Join(out, "\n")+"\n"))
}

// machineID writes /etc/machine-id in place (systemd may have bind-mounted
// /run/machine-id on it: a rename would fail or be hidden) and
// /var/lib/dbus/machine-id when it is a file of its own.
func (e *identityEnv) machineID(_ context.Context, id Identity) error {
	data := []byte(id.MachineID + "\n")
	if err := writeInPlace(e.path("etc/machine-id"), 0o444, data); err != nil {
		return err
	}
	dbus := e.path("var/lib/dbus/machine-id")
	fi, err := os.Lstat(dbus)
	switch {
	case errors.Is(err, fs.ErrNotExist), err == nil && !fi.Mode().IsRegular():
		return nil // absent, or Debian's symlink to /etc/machine-id
	case err != nil:
		return err
	}
	return writeInPlace(dbus, 0o444, data)
}

// networkdUnit is the name systemd-network-generator gives the .network it
// makes from ip= for an interface; the identity's replaces it.
func networkdUnit(iface string) string { return "run/systemd/network/70-" + iface + ".network" }

// networkdFile replaces the generator's .network for the interface, so that
// networkd, on a reload or a link change, configures the new address and
// not the parent's.
func (e *identityEnv) networkdFile(_ context.Context, id Identity) error {
	conf := fmt.Sprintf(`# banger: this VM's own address (identity request), replacing the ip= one
[Match]
Name=%s

[Link]
MACAddress=%s

[Network]
Address=%s
Gateway=%s
DNS=%s
LinkLocalAddressing=no
IPv6AcceptRA=no
`, id.Interface, strings.ToLower(id.MAC), id.Address, id.Gateway, id.DNS)
	dir := e.path("run/systemd/network")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return replaceFile(e.path(networkdUnit(id.Interface)), 0o644, []byte(conf))
}

// networkdReload makes a running systemd-networkd read the new file (it
// keeps the parsed old one otherwise and would put the parent's address
// back at the next link change). Without networkd there is nothing to do.
func (e *identityEnv) networkdReload(ctx context.Context, _ Identity) error {
	if _, err := os.Stat(e.path("run/systemd/netif")); err != nil {
		return nil
	}
	_, err := e.run(ctx, "networkctl", "reload")
	return err
}

// resolv names the new nameserver first in /etc/resolv.conf and keeps the
// other lines (search, options).
func (e *identityEnv) resolv(_ context.Context, id Identity) error {
	old, err := readBounded(e.path("etc/resolv.conf"), 1<<20)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	out := []string{"nameserver " + id.DNS}
	for _, l := range strings.Split(string(old), "\n") {
		if f := strings.Fields(l); l == "" || len(f) > 0 && f[0] == "nameserver" {
			continue
		}
		out = append(out, l)
	}
	return replaceFile(e.path("etc/resolv.conf"), 0o644, []byte(strings.Join(out, "\n")+"\n"))
}

// hostKeys writes the new keys (temp + rename, private 0600, public 0644),
// then removes every other /etc/ssh/ssh_host_*_key{,.pub}.
func (e *identityEnv) hostKeys(_ context.Context, id Identity) error {
	dir := e.path("etc/ssh")
	keep := map[string]bool{}
	for _, typ := range id.hostKeyTypes() {
		k := id.HostKeys[typ]
		base := filepath.Join(dir, "ssh_host_"+typ+"_key")
		priv := k.Private
		if !strings.HasSuffix(priv, "\n") {
			priv += "\n"
		}
		if err := replaceFile(base, 0o600, []byte(priv)); err != nil {
			return err
		}
		if err := replaceFile(base+".pub", 0o644, []byte(strings.TrimSuffix(k.Public, "\n")+"\n")); err != nil {
			return err
		}
		keep[base], keep[base+".pub"] = true, true
	}
	old, err := filepath.Glob(filepath.Join(dir, "ssh_host_*_key*"))
	if err != nil {
		return err
	}
	for _, p := range old {
		if keep[p] || !(strings.HasSuffix(p, "_key") || strings.HasSuffix(p, "_key.pub")) {
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing the old host key: %w", err)
		}
	}
	return nil
}

// restart restarts, in one blocking systemctl call, the named units that
// are loaded and active or enabled. Blocking: the call returns once each
// unit's start job is done (ssh.service is Type=notify: sshd listens and has
// read the new host keys).
func (e *identityEnv) restart(ctx context.Context, id Identity) error {
	if len(id.Restart) == 0 {
		return nil
	}
	args := append([]string{"systemctl", "show", "--property=Id,LoadState,ActiveState,UnitFileState", "--"}, id.Restart...)
	out, err := e.run(ctx, args...)
	if err != nil {
		return err
	}
	units := restartable(out)
	if len(units) == 0 {
		return nil
	}
	_, err = e.run(ctx, append([]string{"systemctl", "restart", "--"}, units...)...)
	return err
}

// restartable reads `systemctl show` blocks (blank-line separated) and
// returns the Ids that are loaded and active or enabled.
func restartable(show []byte) []string {
	var ids []string
	for _, block := range strings.Split(string(show), "\n\n") {
		props := map[string]string{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				props[k] = v
			}
		}
		if props["Id"] == "" || props["LoadState"] != "loaded" {
			continue
		}
		switch {
		case props["ActiveState"] == "active", props["ActiveState"] == "activating", props["ActiveState"] == "reloading",
			props["UnitFileState"] == "enabled", props["UnitFileState"] == "enabled-runtime":
			ids = append(ids, props["Id"])
		}
	}
	return ids
}

// maxCommandOutput bounds what runCommand keeps of a command's output.
const maxCommandOutput = 64 << 10

// runCommand runs argv (PATH lookup) and returns its output; a failure's
// error carries the output's start.
func runCommand(ctx context.Context, argv ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{"PATH=" + defaultPath, "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C"}
	var out capBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, trunc(strings.TrimSpace(out.String()), 512))
	}
	return out.Bytes(), nil
}

// capBuffer keeps the first maxCommandOutput bytes written to it.
type capBuffer struct{ bytes.Buffer }

func (b *capBuffer) Write(p []byte) (int, error) {
	if room := maxCommandOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// replaceFile writes data to a temp file beside path and renames it over
// path, so readers see the old or the new file, never a part.
func replaceFile(path string, mode os.FileMode, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".banger-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// writeInPlace truncates and rewrites path (created with mode if absent).
func writeInPlace(path string, mode os.FileMode, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// readBounded reads path, refusing one over limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// Kernel RNG ioctls (linux/random.h): RNDADDENTROPY = _IOW('R', 3, int[2]),
// RNDRESEEDCRNG = _IO('R', 7).
const (
	rndAddEntropy  = 0x40085203
	rndReseedCRNG  = 0x5207
	randomDevice   = "/dev/urandom"
	bitsPerByteCap = 8
)

// addEntropy credits b to the kernel RNG (all of its bits: the host made it
// with its own CSPRNG) and reseeds the CRNG, so that this guest's random
// numbers part from its parent's at once.
func addEntropy(b []byte) error {
	f, err := os.OpenFile(randomDevice, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+len(b)+3)
	*(*int32)(unsafe.Pointer(&info[0])) = int32(len(b) * bitsPerByteCap)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(len(b))
	copy(info[8:], b)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&info[0]))); errno != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); errno != 0 {
		return fmt.Errorf("RNDRESEEDCRNG: %w", errno)
	}
	return nil
}
