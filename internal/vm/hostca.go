package vm

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"banger/internal/api"
)

// Host CAs in guests: a host behind a TLS-inspecting proxy (or with a
// corporate CA) has its extra CAs in /usr/local/share/ca-certificates; the
// guest must trust them too or `go mod download`, curl and apt over https
// fail. At each boot, once the agent answers, the daemon sends the
// certificates named by guest_ca_certs; the guest replaces a marked block at
// the end of /etc/ssl/certs/ca-certificates.crt with them (temp file +
// rename, so a guest's own update-ca-certificates keeps working; it drops
// the block until the next boot). A clean stop (guestShutdown) strips the
// block again, so an image built or promoted from the VM stays host-neutral
// (a VM that crashed keeps it on disk until its next boot replaces it). The
// names added are kept in <vm dir>/host-cas.json for `vm show`.
const (
	maxHostCAFiles = 32
	maxHostCABytes = 256 << 10
	hostCAsName    = "host-cas.json"
)

// hostCABegin and hostCAEnd mark banger's block in the guest's bundle.
const (
	hostCABegin = "# banger host CAs: begin"
	hostCAEnd   = "# banger host CAs: end"
	guestBundle = "/etc/ssl/certs/ca-certificates.crt"
)

// stripHostCAScript removes banger's block from the guest's bundle.
const stripHostCAScript = `b=` + guestBundle + `
[ -f "$b" ] || exit 0
grep -qxF '` + hostCABegin + `' "$b" || exit 0
sed '/^` + hostCABegin + `$/,/^` + hostCAEnd + `$/d' "$b" >"$b.banger" && chmod 0644 "$b.banger" && mv -f "$b.banger" "$b"
`

// hostCAScript runs in the guest with the PEM certificates on stdin.
const hostCAScript = `set -eu
b=` + guestBundle + `
[ -f "$b" ] || { echo "no $b in the guest" >&2; exit 3; }
sed '/^` + hostCABegin + `$/,/^` + hostCAEnd + `$/d' "$b" >"$b.banger"
{ echo '` + hostCABegin + `'; cat; echo '` + hostCAEnd + `'; } >>"$b.banger"
chmod 0644 "$b.banger"
mv -f "$b.banger" "$b"
`

// hostCAs reads the certificates guest_ca_certs names: PEM files holding
// only parsable certificates, within bounds. Files that do not qualify are
// skipped with a warning.
func (m *Manager) hostCAs() (pemData []byte, names []string) {
	var files []string
	for _, g := range m.cfg.GuestCACerts {
		matches, _ := filepath.Glob(g)
		files = append(files, matches...)
	}
	slices.Sort(files)
	files = slices.Compact(files)
	for _, f := range files {
		if len(names) == maxHostCAFiles {
			m.log.Warn("guest_ca_certs: too many files, the rest skipped", "max", maxHostCAFiles)
			break
		}
		data, err := readCertFile(f, maxHostCABytes-len(pemData))
		if err != nil {
			m.log.Warn("guest_ca_certs: file skipped", "file", f, "err", err)
			continue
		}
		pemData = append(pemData, data...)
		names = append(names, f)
	}
	return pemData, names
}

// readCertFile returns f's certificates re-encoded as PEM (nothing but
// certificates passes), at most max bytes of input.
func readCertFile(f string, max int) ([]byte, error) {
	fh, err := os.Open(f)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	raw, err := io.ReadAll(io.LimitReader(fh, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > max {
		return nil, fmt.Errorf("larger than the %d bytes left", max)
	}
	var out bytes.Buffer
	for {
		var blk *pem.Block
		blk, raw = pem.Decode(raw)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("holds a %s, not only certificates", blk.Type)
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err != nil {
			return nil, fmt.Errorf("unparsable certificate: %w", err)
		}
		_ = pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: blk.Bytes})
	}
	if out.Len() == 0 {
		return nil, fmt.Errorf("no PEM certificate in it")
	}
	return out.Bytes(), nil
}

// installHostCAs adds the host's CAs to a booted guest's bundle. Failures
// are logged and recorded (empty list), never fatal to the boot.
func (m *Manager) installHostCAs(ctx context.Context, v *api.VM, h *Handles) {
	data, names := m.hostCAs()
	rec := filepath.Join(v.Runtime.VMDir, hostCAsName)
	if len(names) == 0 {
		_ = os.Remove(rec)
		return
	}
	c, err := m.agentFor(ctx, v.ID, h)
	if err == nil {
		var code int
		errOut := &cappedBuffer{max: 4096}
		code, err = c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", hostCAScript}}, bytes.NewReader(data), io.Discard, errOut)
		if err == nil && code != 0 {
			err = fmt.Errorf("exit %d: %s", code, bytes.TrimSpace(errOut.Bytes()))
		}
	}
	if err != nil {
		m.log.Warn("adding the host's CAs to the guest", "vm", v.Name, "err", err)
		names = nil
	}
	js, _ := json.Marshal(names)
	if err := writeFileAtomic(rec, js); err != nil {
		m.log.Warn("recording the host's CAs", "vm", v.Name, "err", err)
	}
}

// guestCAs lists the host CA files added to v's guest at its last boot.
func guestCAs(v api.VM) []string {
	var names []string
	if js, err := os.ReadFile(filepath.Join(v.Runtime.VMDir, hostCAsName)); err == nil {
		_ = json.Unmarshal(js, &names)
	}
	return names
}
