package hostkeys

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"banger/internal/agent"
)

func TestGenerate(t *testing.T) {
	began := time.Now()
	keys, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Generate took %v", time.Since(began))
	if len(keys) != 2 || keys[0].Type != "ed25519" || keys[1].Type != "ecdsa" {
		t.Fatalf("Generate made %d keys (%v), want ed25519 and ecdsa", len(keys), keys)
	}
	wantAlgo := map[string]string{"ed25519": ssh.KeyAlgoED25519, "ecdsa": ssh.KeyAlgoECDSA256}
	for _, k := range keys {
		signer, err := ssh.ParsePrivateKey([]byte(k.Private))
		if err != nil {
			t.Fatalf("%s private key does not parse: %v", k.Type, err)
		}
		pub, _, _, rest, err := ssh.ParseAuthorizedKey([]byte(k.Public))
		if err != nil || len(rest) != 0 {
			t.Fatalf("%s public line %q: %v (rest %q)", k.Type, k.Public, err, rest)
		}
		if !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) || pub.Type() != wantAlgo[k.Type] {
			t.Errorf("%s: public %s does not match the private key's %s", k.Type, pub.Type(), signer.PublicKey().Type())
		}
	}
	again, _ := Generate()
	if again[0].Public == keys[0].Public {
		t.Error("two Generate calls made the same key")
	}
}

// The agent accepts exactly what Generate makes.
func TestForAgentValidates(t *testing.T) {
	keys, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	id := agent.Identity{
		Hostname: "child", MachineID: strings.Repeat("ab", 16), Interface: "eth0", MAC: "52:54:00:00:00:02",
		Address: "10.77.0.3/24", Gateway: "10.77.0.1", DNS: "10.77.0.1", UnixNano: time.Now().UnixNano(),
		Entropy: make([]byte, agent.MinEntropy), HostKeys: keys.ForAgent(),
	}
	if err := id.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
}

func TestKnownHosts(t *testing.T) {
	keys, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(file, []byte(keys.KnownHosts("child.vm", "10.77.0.3", "127.0.0.1:2222")), 0o600); err != nil {
		t.Fatal(err)
	}
	check, err := knownhosts.New(file)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Generate()
	for _, host := range []string{"child.vm:22", "10.77.0.3:22", "127.0.0.1:2222"} {
		addr := &net.TCPAddr{IP: net.ParseIP("10.77.0.3"), Port: 22}
		for _, pub := range keys.PublicKeys() {
			if err := check(host, addr, pub); err != nil {
				t.Errorf("%s with its own %s key: %v", host, pub.Type(), err)
			}
		}
		if err := check(host, addr, other.PublicKeys()[0]); err == nil {
			t.Errorf("%s accepted another key", host)
		}
	}
	// OpenSSH reads the lines too.
	if _, err := exec.LookPath("ssh-keygen"); err == nil {
		out, err := exec.Command("ssh-keygen", "-F", "10.77.0.3", "-f", file).CombinedOutput()
		if err != nil || strings.Count(string(out), "10.77.0.3") < 2 {
			t.Errorf("ssh-keygen -F: %v\n%s", err, out)
		}
		priv := filepath.Join(t.TempDir(), "k")
		os.WriteFile(priv, []byte(keys[0].Private), 0o600)
		out, err = exec.Command("ssh-keygen", "-y", "-f", priv).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != strings.TrimSpace(keys[0].Public) {
			t.Errorf("ssh-keygen -y of the private key: %v %q, want %q", err, out, keys[0].Public)
		}
	}
}
