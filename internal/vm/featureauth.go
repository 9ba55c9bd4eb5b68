package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/feature"
)

// Feature credentials (issue 13): a feature server with an Auth (opencode)
// answers only with a password the daemon makes for each VM. Any local
// user of the host can reach a guest's address, so without it every one
// of them could drive the agent in every VM. The password lives in
// <vm dir>/<feature>.secret (0600, the daemon's) from the VM's first boot
// on; at each boot, once the agent answers, the daemon writes it to the
// feature's EnvFile in the guest (root-only, on /run: never on the disk,
// so images built or promoted from the VM do not carry it) and starts the
// unit, which reads it. An image baked before this (its unit does not read
// the file) is healed with a runtime drop-in and a restart of the unit.
// The outcome is kept in <vm dir>/feature-auth.json for `vm show`.
//
// Who gets the password: every caller the daemon serves (the socket's
// group, the web UI's token holders) through VMDetail.Access — they can
// already exec as root in the VM. Other local users cannot get it.
const (
	secretBytes     = 32
	featureAuthName = "feature-auth.json"
)

// Outcomes of installing a feature's credential (featureAuth values).
const (
	authProtected = "protected"
	authHealed    = "healed"
)

// featureSecret returns the password of feature d in v, making it (and
// storing it 0600 in v's directory) the first time.
func featureSecret(v api.VM, d feature.Descriptor) (string, error) {
	path := filepath.Join(v.Runtime.VMDir, d.Name+".secret")
	if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the %s password: %w", d.Name, err)
	}
	return newFeatureSecret(path)
}

// newFeatureSecret makes a random password (base64url: safe in a URL's
// userinfo and in a systemd environment file) and stores it at path.
func newFeatureSecret(path string) (string, error) {
	raw := make([]byte, secretBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	s := base64.RawURLEncoding.EncodeToString(raw)
	if err := writeFileAtomic(path, []byte(s+"\n")); err != nil {
		return "", err
	}
	return s, nil
}

// runtimeUnitDir is where systemd takes runtime unit drop-ins from.
const runtimeUnitDir = "/run/systemd/system"

// authScript runs in the guest with the environment file's content on
// stdin: it writes the file root-only and starts the unit. A unit that
// does not read the file (an image baked before feature credentials) gets
// a runtime drop-in in unitDir that does, and is restarted; it then
// prints "healed".
func authScript(a feature.Auth, unitDir string) string {
	dropin := unitDir + "/" + a.Unit + ".d/banger-auth.conf"
	return `set -eu
f=` + a.EnvFile + `
umask 077
mkdir -p "$(dirname "$f")"
cat >"$f.tmp"
chmod 0600 "$f.tmp"
mv -f "$f.tmp" "$f"
if systemctl cat ` + a.Unit + ` 2>/dev/null | grep -qxF "EnvironmentFile=$f"; then
	systemctl start ` + a.Unit + `
	exit 0
fi
mkdir -p "$(dirname ` + dropin + `)"
printf '[Service]\nEnvironmentFile=%s\n' "$f" >` + dropin + `
chmod 0644 ` + dropin + `
systemctl daemon-reload
systemctl restart ` + a.Unit + `
echo healed
`
}

// installFeatureAuth gives each credentialed feature of v's image its
// password, in the guest. Failures are logged and recorded, never fatal to
// the boot: the readiness probe still works, and `vm show` warns that the
// server answers without a password.
func (m *Manager) installFeatureAuth(ctx context.Context, v *api.VM, h *Handles) {
	rec := filepath.Join(v.Runtime.VMDir, featureAuthName)
	status := map[string]string{}
	for _, d := range m.imageFeatures(ctx, *v) {
		if d.Auth == nil {
			continue
		}
		st, err := m.installOneAuth(ctx, v, h, d)
		if err != nil {
			m.log.Warn("installing a feature's password in the guest", "vm", v.Name, "feature", d.Name, "err", err)
			st = err.Error()
		}
		status[d.Name] = st
	}
	if len(status) == 0 {
		_ = os.Remove(rec)
		return
	}
	js, _ := json.Marshal(status)
	if err := writeFileAtomic(rec, js); err != nil {
		m.log.Warn("recording the features' passwords", "vm", v.Name, "err", err)
	}
}

func (m *Manager) installOneAuth(ctx context.Context, v *api.VM, h *Handles, d feature.Descriptor) (string, error) {
	secret, err := featureSecret(*v, d)
	if err != nil {
		return "", err
	}
	c, err := m.agentFor(ctx, v.ID, h)
	if err != nil {
		return "", err
	}
	env := d.Auth.PasswordEnv + "=" + secret + "\n"
	out := &cappedBuffer{max: 256}
	errOut := &cappedBuffer{max: 4096}
	code, err := c.Exec(ctx, api.ExecRequest{Argv: []string{"sh", "-c", authScript(*d.Auth, runtimeUnitDir)}}, strings.NewReader(env), out, errOut)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("exit %d: %s", code, bytes.TrimSpace(errOut.Bytes()))
	}
	if strings.TrimSpace(out.String()) == "healed" {
		return authHealed, nil
	}
	return authProtected, nil
}

// featureAuth reads what installFeatureAuth recorded at v's last boot.
func featureAuth(v api.VM) map[string]string {
	status := map[string]string{}
	if js, err := os.ReadFile(filepath.Join(v.Runtime.VMDir, featureAuthName)); err == nil {
		_ = json.Unmarshal(js, &status)
	}
	return status
}

// probeAuth returns the user and password the readiness probe of d in v
// sends ("" when d has no Auth or no password could be had).
func probeAuth(v api.VM, d feature.Descriptor) (user, password string) {
	if d.Auth == nil {
		return "", ""
	}
	s, err := featureSecret(v, d)
	if err != nil {
		return "", ""
	}
	return d.Auth.User, s
}

// access lists how to reach each feature server of a running v: the URL
// with the credential (by address: it needs no DNS setup), and a warning
// when the server answers without one.
func (m *Manager) access(ctx context.Context, v api.VM) []api.FeatureAccess {
	if v.Runtime.State != api.VMRunning || v.Runtime.GuestIP == "" {
		return nil
	}
	status := featureAuth(v)
	var out []api.FeatureAccess
	for _, d := range m.imageFeatures(ctx, v) {
		a := api.FeatureAccess{Feature: d.Name, URL: d.URL(v.Runtime.GuestIP)}
		if d.Auth != nil {
			switch st := status[d.Name]; st {
			case authProtected, authHealed:
				if s, err := featureSecret(v, d); err == nil {
					a.User, a.Password, a.URL = d.Auth.User, s, d.CredentialURL(v.Runtime.GuestIP, s)
				}
			case "":
				a.Warning = d.Name + " answers without a password: the daemon has not given it one (yet); every local user can drive it"
			default:
				a.Warning = d.Name + " answers without a password (" + st + "): every local user can drive it; restart the VM to retry"
			}
		}
		out = append(out, a)
	}
	return out
}
