package vm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testCertPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestHostCAs(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	cert := testCertPEM(t)
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.crt", append([]byte("comment line\n"), cert...))
	write("b.crt", append(append([]byte{}, cert...), cert...))
	write("key.crt", append(append([]byte{}, cert...), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})...))
	write("junk.crt", []byte("not a certificate"))
	write("bad.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("garbage")}))
	write("huge.crt", make([]byte, maxHostCABytes+1))
	f.m.cfg.GuestCACerts = []string{filepath.Join(dir, "*.crt"), filepath.Join(dir, "a.crt")}
	data, names := f.m.hostCAs()
	want := []string{filepath.Join(dir, "a.crt"), filepath.Join(dir, "b.crt")}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Errorf("names %v, want %v (no key, junk, bad or huge file; no duplicate)", names, want)
	}
	if n := strings.Count(string(data), "BEGIN CERTIFICATE"); n != 3 || strings.Contains(string(data), "comment") {
		t.Errorf("%d certificates sent (want 3, only PEM certificates):\n%s", n, data)
	}
	f.m.cfg.GuestCACerts = nil
	if data, names := f.m.hostCAs(); len(data) != 0 || len(names) != 0 {
		t.Errorf("guest_ca_certs = [] still sends %v", names)
	}
}
