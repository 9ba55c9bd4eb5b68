// Package hostkeys makes SSH host keys for a guest on the host: an ed25519
// and an ECDSA P-256 key (no RSA: too slow to make, and old clients only),
// as the guest's sshd reads them and as the host's known_hosts names them.
// It handles no guest data.
package hostkeys

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"banger/internal/agent"
)

// Key is one host key.
type Key struct {
	// Type is the key's file name part: "ed25519" or "ecdsa"
	// (/etc/ssh/ssh_host_<type>_key).
	Type string
	// Private is the OpenSSH private key PEM, unencrypted.
	Private string
	// Public is the authorized-keys line ("ssh-ed25519 AAAA…\n").
	Public string
	// pub is the parsed public key.
	pub ssh.PublicKey
}

// Keys is one guest's set of host keys, ed25519 first.
type Keys []Key

// Generate makes a fresh ed25519 and ECDSA P-256 host key.
func Generate() (Keys, error) {
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making an ed25519 host key: %w", err)
	}
	ecPriv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("making an ecdsa host key: %w", err)
	}
	var keys Keys
	for _, k := range []struct {
		typ  string
		priv any
	}{{"ed25519", edPriv}, {"ecdsa", ecPriv}} {
		key, err := newKey(k.typ, k.priv)
		if err != nil {
			return nil, err
		}
		keys = append(keys, key)
	}
	return keys, nil
}

func newKey(typ string, priv any) (Key, error) {
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return Key{}, fmt.Errorf("%s host key: %w", typ, err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return Key{}, fmt.Errorf("encoding the %s host key: %w", typ, err)
	}
	return Key{
		Type:    typ,
		Private: string(pem.EncodeToMemory(block)),
		Public:  string(ssh.MarshalAuthorizedKey(signer.PublicKey())),
		pub:     signer.PublicKey(),
	}, nil
}

// PublicKeys returns the parsed public keys.
func (ks Keys) PublicKeys() []ssh.PublicKey {
	out := make([]ssh.PublicKey, 0, len(ks))
	for _, k := range ks {
		out = append(out, k.pub)
	}
	return out
}

// KnownHosts returns known_hosts lines, one a key, naming each of hosts
// (host names or IP addresses, optionally "host:port"; a port other than
// 22 is written "[host]:port", as ssh looks it up).
func (ks Keys) KnownHosts(hosts ...string) string {
	var b strings.Builder
	for _, k := range ks {
		b.WriteString(knownhosts.Line(hosts, k.pub))
		b.WriteByte('\n')
	}
	return b.String()
}

// ForAgent returns the keys as an identity request carries them.
func (ks Keys) ForAgent() map[string]agent.HostKey {
	out := make(map[string]agent.HostKey, len(ks))
	for _, k := range ks {
		out[k.Type] = agent.HostKey{Private: k.Private, Public: k.Public}
	}
	return out
}
