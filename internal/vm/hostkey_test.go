package vm

import (
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"banger/internal/api"
)

func pubLine(t *testing.T) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}

func TestHostKeyLines(t *testing.T) {
	k1, k2 := pubLine(t), pubLine(t)
	got, err := hostKeyLines("10.203.0.5", []byte(k1+" root@guest\n"+k2+"\n"))
	if err != nil || len(got) != 2 || got[0] != "10.203.0.5 "+k1 || got[1] != "10.203.0.5 "+k2 {
		t.Fatalf("got %q (err %v)", got, err)
	}
	many := strings.Repeat(k1+"\n", maxHostKeys+1)
	for in, check := range map[string]func(error) bool{
		"":                            api.IsFailedPrecondition,
		"ssh-ed25519 !!notbase64!!\n": api.IsInvalid,
		"10.0.0.9 " + k1 + "\n":       api.IsInvalid, // a known_hosts line smuggling another host
		many:                          api.IsInvalid,
	} {
		if _, err := hostKeyLines("10.203.0.5", []byte(in)); !check(err) {
			t.Errorf("%.40q: err %v", in, err)
		}
	}
}

func TestCappedBuffer(t *testing.T) {
	b := &cappedBuffer{max: 4}
	if n, err := b.Write([]byte("abcdef")); n != 6 || err != nil || b.String() != "abcd" || !b.over {
		t.Errorf("n %d err %v buf %q over %v", n, err, b.String(), b.over)
	}
}
