package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"banger/internal/api"
)

// Identity is what a guest forked from a snapshot takes so that it stops
// being its parent: an identity request applies it in one round trip. Every
// field is required but Restart. The guest's steps, in order: clock
// (UnixNano); entropy (credited to the kernel RNG, then a CRNG reseed);
// hostname (sethostname, /etc/hostname, the 127.0.1.1 line of /etc/hosts);
// machine-id (/etc/machine-id in place, /var/lib/dbus/machine-id if a
// file); networkd-file (/run/systemd/network/10-banger-IFACE.network, the
// generator's ip= file for IFACE removed: what networkd applies when it
// next starts; it is not restarted now — a restart reconfigures the link
// and the new address was seen missing for a moment after the answer); interface (netlink: MAC, the old
// IPv4 addresses flushed, the new one, the default route); resolv;
// host-keys (every /etc/ssh/ssh_host_*_key{,.pub} replaced by exactly
// HostKeys); restart (blocking: each unit's start job is done when the
// answer comes).
//
// Under TCG (Debian 12 test image, a booted guest) the whole request takes
// 0.14-0.3 s without restarts; a blocking ssh restart adds 0.7-1.8 s. The
// OpenSSH of Debian 12 (9.2) reads its host keys at each connection, so it
// serves the new ones without a restart; sshd >= 9.8 (sshd-session) needs
// "ssh" in Restart.
type Identity struct {
	Hostname string `json:"hostname"`
	// MachineID is 32 lowercase hex digits, not all zero.
	MachineID string `json:"machine_id"`
	// Interface is the guest interface to renumber ("eth0").
	Interface string `json:"interface"`
	// MAC is the interface's new unicast hardware address.
	MAC string `json:"mac"`
	// Address is the interface's new IPv4 address with its prefix length
	// ("10.77.0.5/24"); every other IPv4 address on it is removed.
	Address string `json:"address"`
	// Gateway is the default route's IPv4 next hop, inside Address's subnet.
	Gateway string `json:"gateway"`
	// DNS is the nameserver resolv.conf names.
	DNS string `json:"dns"`
	// UnixNano is the time the guest clock is set to, first.
	UnixNano int64 `json:"unix_nano"`
	// Entropy is credited to the kernel RNG (at least MinEntropy bytes).
	Entropy []byte `json:"entropy"`
	// HostKeys maps a key type ("ed25519", "ecdsa", "rsa") to the key.
	HostKeys map[string]HostKey `json:"host_keys"`
	// Restart names systemd units restarted last, each only when it is
	// loaded and active or enabled; a unit the guest lacks is skipped.
	Restart []string `json:"restart,omitempty"`
}

// HostKey is one SSH host key as sshd reads it.
type HostKey struct {
	// Private is the OpenSSH private key PEM (ssh.MarshalPrivateKey).
	Private string `json:"private"`
	// Public is the authorized-keys line ("ssh-ed25519 AAAA… [comment]").
	Public string `json:"public"`
}

// IdentityResult is the guest's answer to an identity request.
type IdentityResult struct {
	OK    bool           `json:"ok"`
	Steps []IdentityStep `json:"steps,omitempty"`
	// Error is the failed step's error (or the refusal of the request).
	Error string `json:"error,omitempty"`
	// Step names the failed step; empty when the request was refused.
	Step string `json:"step,omitempty"`
}

// IdentityStep is one applied step and how long it took in the guest.
type IdentityStep struct {
	Name  string  `json:"name"`
	MS    float64 `json:"ms"`
	Error string  `json:"error,omitempty"`
}

// Identity limits.
const (
	MinEntropy          = 64
	maxEntropy          = 4096
	maxHostKeys         = 4
	maxHostKeyPrivate   = 16 << 10
	maxHostKeyPublic    = 8 << 10
	maxRestartUnits     = 8
	maxUnitName         = 128
	maxHostname         = 64
	maxIdentityAnswer   = 64 << 10
	maxIdentityAnswerSt = 32
)

// hostKeyAlgos are the public key algorithms a host key type may carry.
var hostKeyAlgos = map[string][]string{
	"ed25519": {"ssh-ed25519"},
	"ecdsa":   {"ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"},
	"rsa":     {"ssh-rsa"},
}

const (
	pemBegin = "-----BEGIN OPENSSH PRIVATE KEY-----\n"
	pemEnd   = "-----END OPENSSH PRIVATE KEY-----"
)

// Validate checks every field; the error (api.Invalid) names the field and
// what it wants. The guest applies nothing from an Identity that fails it.
func (id Identity) Validate() error {
	checks := []func() error{
		id.validateHostname, id.validateMachineID, id.validateNet, id.validateEntropy,
		id.validateHostKeys, id.validateRestart,
	}
	for _, c := range checks {
		if err := c(); err != nil {
			return err
		}
	}
	if id.UnixNano <= 0 {
		return api.Invalid("identity: unix_nano must be a positive time, got %d", id.UnixNano)
	}
	return nil
}

func (id Identity) validateHostname() error {
	h := id.Hostname
	if h == "" || len(h) > maxHostname {
		return api.Invalid("identity: hostname must have 1 to %d characters, got %d", maxHostname, len(h))
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return api.Invalid("identity: hostname %q: each dot-separated label needs 1-63 characters, not starting or ending with '-'", h)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return api.Invalid("identity: hostname %q has %q; use letters, digits, '-' and '.'", h, string(rune(c)))
			}
		}
	}
	return nil
}

func (id Identity) validateMachineID() error {
	m := id.MachineID
	if _, err := hex.DecodeString(m); len(m) != 32 || err != nil || strings.ToLower(m) != m {
		return api.Invalid("identity: machine_id %q must be 32 lowercase hex digits", m)
	}
	if m == strings.Repeat("0", 32) {
		return api.Invalid("identity: machine_id must not be all zeros")
	}
	return nil
}

func (id Identity) validateNet() error {
	if n := id.Interface; n == "" || len(n) > 15 || n == "." || n == ".." || strings.ContainsAny(n, "/: \t\n\x00") {
		return api.Invalid("identity: interface %q is not an interface name (1-15 characters, no '/', ':' or spaces; e.g. eth0)", n)
	}
	mac, err := net.ParseMAC(id.MAC)
	if err != nil || len(mac) != 6 {
		return api.Invalid("identity: mac %q is not a 6-byte hardware address (e.g. 52:54:00:12:34:56)", id.MAC)
	}
	if mac[0]&1 != 0 || bytes.Equal(mac, make([]byte, 6)) {
		return api.Invalid("identity: mac %s must be a unicast, non-zero address", mac)
	}
	pfx, err := netip.ParsePrefix(id.Address)
	if err != nil || !pfx.Addr().Is4() || pfx.Bits() < 1 || pfx.Bits() > 30 {
		return api.Invalid("identity: address %q must be an IPv4 address with a prefix length of 1-30 (e.g. 10.77.0.5/24)", id.Address)
	}
	a := pfx.Addr()
	if a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || a == pfx.Masked().Addr() {
		return api.Invalid("identity: address %s is not a host address", id.Address)
	}
	gw, err := netip.ParseAddr(id.Gateway)
	if err != nil || !gw.Is4() || !pfx.Masked().Contains(gw) || gw == a {
		return api.Invalid("identity: gateway %q must be an IPv4 address inside %s other than the guest's", id.Gateway, pfx.Masked())
	}
	dns, err := netip.ParseAddr(id.DNS)
	if err != nil || dns.IsUnspecified() || dns.Zone() != "" {
		return api.Invalid("identity: dns %q is not a nameserver IP address", id.DNS)
	}
	return nil
}

func (id Identity) validateEntropy() error {
	if n := len(id.Entropy); n < MinEntropy || n > maxEntropy {
		return api.Invalid("identity: entropy must hold %d to %d random bytes, got %d", MinEntropy, maxEntropy, n)
	}
	return nil
}

func (id Identity) validateHostKeys() error {
	if len(id.HostKeys) == 0 || len(id.HostKeys) > maxHostKeys {
		return api.Invalid("identity: host_keys must hold 1 to %d keys, got %d", maxHostKeys, len(id.HostKeys))
	}
	for typ, k := range id.HostKeys {
		algos, ok := hostKeyAlgos[typ]
		if !ok {
			return api.Invalid("identity: host key type %q unknown (want ed25519, ecdsa or rsa)", typ)
		}
		if len(k.Private) > maxHostKeyPrivate || len(k.Public) > maxHostKeyPublic {
			return api.Invalid("identity: %s host key too large (private %d bytes, max %d; public %d, max %d)",
				typ, len(k.Private), maxHostKeyPrivate, len(k.Public), maxHostKeyPublic)
		}
		if !strings.HasPrefix(k.Private, pemBegin) || strings.TrimRight(k.Private[len(pemBegin):], "\n") == "" ||
			!strings.HasSuffix(strings.TrimRight(k.Private, "\n"), pemEnd) || strings.IndexByte(k.Private, 0) >= 0 {
			return api.Invalid("identity: %s host key: private is not an OpenSSH private key PEM (ssh.MarshalPrivateKey)", typ)
		}
		if err := validatePublicLine(k.Public, algos); err != nil {
			return api.Invalid("identity: %s host key: %v", typ, err)
		}
	}
	return nil
}

// validatePublicLine checks an authorized-keys line: algo, base64 blob whose
// embedded name is algo, an optional printable comment, one line.
func validatePublicLine(line string, algos []string) error {
	line = strings.TrimSuffix(line, "\n")
	for _, c := range []byte(line) {
		if c < 0x20 || c == 0x7f {
			return fmt.Errorf("public line has a control character")
		}
	}
	f := strings.Fields(line)
	if len(f) < 2 {
		return fmt.Errorf("public line %q is not \"ALGO BASE64 [comment]\"", trunc(line, 40))
	}
	known := false
	for _, a := range algos {
		known = known || f[0] == a
	}
	if !known {
		return fmt.Errorf("public key algorithm %q, want one of %s", trunc(f[0], 40), strings.Join(algos, ", "))
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil || len(blob) < 4+len(f[0]) || string(blob[4:4+len(f[0])]) != f[0] {
		return fmt.Errorf("public key blob is not a base64 %s key", f[0])
	}
	return nil
}

func (id Identity) validateRestart() error {
	if len(id.Restart) > maxRestartUnits {
		return api.Invalid("identity: restart names %d units, at most %d", len(id.Restart), maxRestartUnits)
	}
	for _, u := range id.Restart {
		if !validUnitName(u) {
			return api.Invalid("identity: restart: %q is not a systemd unit name (letters, digits, \"@._:-\", not starting with '-')", trunc(u, 40))
		}
	}
	return nil
}

func validUnitName(u string) bool {
	if u == "" || len(u) > maxUnitName || u[0] == '-' || u[0] == '.' {
		return false
	}
	for _, c := range []byte(u) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("@._:-", c) >= 0) {
			return false
		}
	}
	return true
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// hostKeyTypes returns the types of id's host keys in a stable order.
func (id Identity) hostKeyTypes() []string {
	types := make([]string, 0, len(id.HostKeys))
	for t := range id.HostKeys {
		types = append(types, t)
	}
	sort.Strings(types)
	return types
}

// SetIdentity gives the guest id (see Identity) and returns each step's
// timing. id is validated here first (api.Invalid, nothing sent). A failed
// step is an error naming it, with the steps so far in the result; an agent
// too old to know the op is FailedPrecondition. The answer is bounded.
func (c *Client) SetIdentity(ctx context.Context, id Identity) (IdentityResult, error) {
	if err := id.Validate(); err != nil {
		return IdentityResult{}, err
	}
	line, err := c.roundTripLimit(ctx, Request{Op: OpIdentity, Identity: &id}, maxIdentityAnswer)
	if err != nil {
		return IdentityResult{}, err
	}
	var res IdentityResult
	if err := json.Unmarshal(line, &res); err != nil {
		return IdentityResult{}, api.Unavailable("malformed identity answer from the guest agent: %w", err)
	}
	if len(res.Steps) > maxIdentityAnswerSt {
		return IdentityResult{}, api.Unavailable("identity answer from the guest agent has %d steps, at most %d", len(res.Steps), maxIdentityAnswerSt)
	}
	switch {
	case res.OK:
		return res, nil
	case res.Step == "":
		return res, api.FailedPrecondition("the guest agent refused the identity request (%s): the image was made by an older banger", trunc(res.Error, 512)).
			WithFix("use an image made by this banger (banger image create), whose agent takes identities")
	default:
		return res, fmt.Errorf("guest identity step %s: %s", trunc(res.Step, 64), trunc(res.Error, 1024))
	}
}
