package agent

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/api"
)

// testPublicLine makes an authorized-keys line for algo with a well-formed
// blob (the agent checks the embedded name, not the key).
func testPublicLine(algo string) string {
	blob := binary.BigEndian.AppendUint32(nil, uint32(len(algo)))
	blob = append(blob, algo...)
	blob = binary.BigEndian.AppendUint32(blob, 32)
	blob = append(blob, make([]byte, 32)...)
	return algo + " " + base64.StdEncoding.EncodeToString(blob) + " test"
}

func testHostKey(typ, algo string) HostKey {
	return HostKey{Private: pemBegin + "b3BlbnNzaC1rZXktdjEAAAAA-" + typ + "\n" + pemEnd + "\n", Public: testPublicLine(algo)}
}

func testIdentity() Identity {
	return Identity{
		Hostname: "child-1", MachineID: "0123456789abcdef0123456789abcdef", Interface: "eth0",
		MAC: "52:54:00:aa:bb:02", Address: "10.77.0.9/24", Gateway: "10.77.0.1", DNS: "10.77.0.1",
		UnixNano: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano(), Entropy: make([]byte, 64),
		HostKeys: map[string]HostKey{
			"ed25519": testHostKey("ed25519", "ssh-ed25519"),
			"ecdsa":   testHostKey("ecdsa", "ecdsa-sha2-nistp256"),
		},
		Restart: []string{"ssh", "opencode", "missing"},
	}
}

func TestIdentityValidate(t *testing.T) {
	if err := testIdentity().Validate(); err != nil {
		t.Fatalf("a good identity: %v", err)
	}
	bigKey := testHostKey("ed25519", "ssh-ed25519")
	bigKey.Private = pemBegin + strings.Repeat("A", maxHostKeyPrivate) + "\n" + pemEnd + "\n"
	tests := []struct {
		name   string
		change func(*Identity)
		want   string
	}{
		{"empty hostname", func(id *Identity) { id.Hostname = "" }, "hostname must have"},
		{"hostname with a slash", func(id *Identity) { id.Hostname = "../etc" }, "hostname"},
		{"hostname with a space", func(id *Identity) { id.Hostname = "a b" }, "hostname"},
		{"hostname too long", func(id *Identity) { id.Hostname = strings.Repeat("a", 65) }, "1 to 64"},
		{"hostname leading dash", func(id *Identity) { id.Hostname = "-x" }, "label"},
		{"machine-id short", func(id *Identity) { id.MachineID = "abc" }, "32 lowercase hex"},
		{"machine-id upper", func(id *Identity) { id.MachineID = strings.Repeat("AB", 16) }, "32 lowercase hex"},
		{"machine-id zero", func(id *Identity) { id.MachineID = strings.Repeat("0", 32) }, "all zeros"},
		{"no interface", func(id *Identity) { id.Interface = "" }, "interface"},
		{"interface path", func(id *Identity) { id.Interface = "../x" }, "interface"},
		{"bad mac", func(id *Identity) { id.MAC = "52:54:00:zz:00:01" }, "mac"},
		{"multicast mac", func(id *Identity) { id.MAC = "01:00:5e:00:00:01" }, "unicast"},
		{"long mac", func(id *Identity) { id.MAC = "00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01" }, "6-byte"},
		{"address without prefix", func(id *Identity) { id.Address = "10.77.0.9" }, "prefix length"},
		{"ipv6 address", func(id *Identity) { id.Address = "fd00::2/64" }, "IPv4"},
		{"network address", func(id *Identity) { id.Address = "10.77.0.0/24" }, "not a host address"},
		{"gateway outside", func(id *Identity) { id.Gateway = "10.78.0.1" }, "inside 10.77.0.0/24"},
		{"gateway is the guest", func(id *Identity) { id.Gateway = "10.77.0.9" }, "other than"},
		{"bad dns", func(id *Identity) { id.DNS = "resolver" }, "dns"},
		{"no clock", func(id *Identity) { id.UnixNano = 0 }, "unix_nano"},
		{"entropy short", func(id *Identity) { id.Entropy = make([]byte, 63) }, "64 to 4096 random bytes, got 63"},
		{"entropy long", func(id *Identity) { id.Entropy = make([]byte, 4097) }, "got 4097"},
		{"no host keys", func(id *Identity) { id.HostKeys = nil }, "1 to 4 keys, got 0"},
		{"too many host keys", func(id *Identity) {
			for i := range 4 {
				id.HostKeys[fmt.Sprint("x", i)] = testHostKey("ed25519", "ssh-ed25519")
			}
		}, "1 to 4 keys, got 6"},
		{"unknown key type", func(id *Identity) { id.HostKeys["../../root/x"] = id.HostKeys["ed25519"] }, "unknown"},
		{"key too large", func(id *Identity) { id.HostKeys["ed25519"] = bigKey }, "too large"},
		{"private not PEM", func(id *Identity) {
			k := id.HostKeys["ed25519"]
			k.Private = "ssh-ed25519 AAAA"
			id.HostKeys["ed25519"] = k
		}, "not an OpenSSH private key"},
		{"public of another type", func(id *Identity) {
			k := id.HostKeys["ed25519"]
			k.Public = testPublicLine("ssh-rsa")
			id.HostKeys["ed25519"] = k
		}, "algorithm"},
		{"public with a newline inside", func(id *Identity) {
			k := id.HostKeys["ed25519"]
			k.Public += "\nssh-ed25519 AAAA evil"
			id.HostKeys["ed25519"] = k
		}, "control character"},
		{"public blob lies", func(id *Identity) {
			k := id.HostKeys["ed25519"]
			k.Public = "ssh-ed25519 " + base64.StdEncoding.EncodeToString([]byte("\x00\x00\x00\x07ssh-rsa")) + " x"
			id.HostKeys["ed25519"] = k
		}, "not a base64 ssh-ed25519"},
		{"too many units", func(id *Identity) { id.Restart = make([]string, 9) }, "at most 8"},
		{"unit option", func(id *Identity) { id.Restart = []string{"--force"} }, "not a systemd unit name"},
		{"unit with a space", func(id *Identity) { id.Restart = []string{"a b"} }, "not a systemd unit name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := testIdentity()
			keys := map[string]HostKey{}
			for k, v := range id.HostKeys {
				keys[k] = v
			}
			id.HostKeys = keys
			tt.change(&id)
			err := id.Validate()
			if !api.IsInvalid(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate = %v, want Invalid containing %q", err, tt.want)
			}
		})
	}
}

// fakeGuestEnv records what the identity steps do to a temp root.
type fakeGuestEnv struct {
	mu       sync.Mutex
	calls    []string
	clock    time.Time
	entropy  []byte
	hostname string
	link     *Identity
	failLink error
	show     string // systemctl show's answer
}

func (f *fakeGuestEnv) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeGuestEnv) env(root string) *identityEnv {
	return &identityEnv{
		root: root,
		run: func(_ context.Context, argv ...string) ([]byte, error) {
			f.record(strings.Join(argv, " "))
			if len(argv) > 1 && argv[1] == "show" {
				return []byte(f.show), nil
			}
			return nil, nil
		},
		setClock:    func(t time.Time) error { f.record("clock"); f.clock = t; return nil },
		addEntropy:  func(b []byte) error { f.record("entropy"); f.entropy = b; return nil },
		setHostname: func(h string) error { f.record("sethostname " + h); f.hostname = h; return nil },
		setLink: func(id Identity) error {
			f.record("link")
			if f.failLink != nil {
				return f.failLink
			}
			f.link = &id
			return nil
		},
	}
}

// parentRoot lays out the files a parent guest leaves behind.
func parentRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"etc/hostname":                        "parent\n",
		"etc/hosts":                           "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 parent.vm parent\n",
		"etc/machine-id":                      "ffffffffffffffffffffffffffffffff\n",
		"etc/resolv.conf":                     "nameserver 10.77.0.254\nnameserver 10.77.0.253\nsearch vm\n",
		"etc/ssh/ssh_host_ed25519_key":        "old ed25519\n",
		"etc/ssh/ssh_host_ed25519_key.pub":    "ssh-ed25519 OLD\n",
		"etc/ssh/ssh_host_rsa_key":            "old rsa\n",
		"etc/ssh/ssh_host_rsa_key.pub":        "ssh-rsa OLD\n",
		"etc/ssh/ssh_host_dsa_key":            "old dsa\n",
		"etc/ssh/sshd_config":                 "# keep\n",
		"etc/ssh/ssh_host_ed25519_key-cert":   "# not a key file: kept\n",
		"run/systemd/network/90-eth0.network": generatorMarker + "\n\n[Match]\nName=eth0\n[Address]\nAddress=10.77.0.2/24\n",
		"run/systemd/network/50-eth0.network": "# the admin's: kept\n",
		"run/systemd/network/70-eth1.network": "[Match]\nName=eth1\n",
		"run/systemd/netif/links/2":           "",
	}
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(root, "var/lib/dbus"), 0o755)
	if err := os.Symlink("/etc/machine-id", filepath.Join(root, "var/lib/dbus/machine-id")); err != nil {
		t.Fatal(err)
	}
	return root
}

func readTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			rel, _ := filepath.Rel(root, p)
			b, _ := os.ReadFile(p)
			out[rel] = fmt.Sprintf("%s %q", fi.Mode(), b)
		}
		return nil
	})
	return out
}

const showAnswer = "Id=ssh.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n" +
	"Id=opencode.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=disabled\n\n" +
	"Id=missing.service\nLoadState=not-found\nActiveState=inactive\nUnitFileState=\n"

func TestIdentityStepsOnRoot(t *testing.T) {
	root := parentRoot(t)
	f := &fakeGuestEnv{show: showAnswer}
	id := testIdentity()
	res := f.env(root).apply(context.Background(), id)
	if !res.OK || res.Error != "" {
		t.Fatalf("apply = %+v", res)
	}
	var names []string
	for _, s := range res.Steps {
		names = append(names, s.Name)
	}
	wantNames := []string{"clock", "entropy", "hostname", "machine-id", "networkd-file", "interface", "resolv", "host-keys", "restart"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("steps %v, want %v", names, wantNames)
	}
	wantCalls := []string{"clock", "entropy", "sethostname child-1", "link",
		"systemctl show --property=Id,LoadState,ActiveState,UnitFileState -- ssh opencode missing",
		"systemctl restart -- ssh.service"}
	if !reflect.DeepEqual(f.calls, wantCalls) {
		t.Errorf("calls\n%q\nwant\n%q", f.calls, wantCalls)
	}
	if !f.clock.Equal(time.Unix(0, id.UnixNano)) || len(f.entropy) != 64 || f.link == nil || f.link.Address != id.Address {
		t.Errorf("clock %v, entropy %d bytes, link %+v", f.clock, len(f.entropy), f.link)
	}
	key := id.HostKeys["ed25519"]
	ec := id.HostKeys["ecdsa"]
	want := map[string]string{
		"etc/hostname":                        fmt.Sprintf("-rw-r--r-- %q", "child-1\n"),
		"etc/hosts":                           fmt.Sprintf("-rw-r--r-- %q", "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 child-1.vm child-1\n"),
		"etc/machine-id":                      fmt.Sprintf("-rw-r--r-- %q", id.MachineID+"\n"), // in place: the mode is the old file's
		"etc/resolv.conf":                     fmt.Sprintf("-rw-r--r-- %q", "nameserver 10.77.0.1\nsearch vm\n"),
		"etc/ssh/ssh_host_ed25519_key":        fmt.Sprintf("-rw------- %q", key.Private),
		"etc/ssh/ssh_host_ed25519_key.pub":    fmt.Sprintf("-rw-r--r-- %q", key.Public+"\n"),
		"etc/ssh/ssh_host_ecdsa_key":          fmt.Sprintf("-rw------- %q", ec.Private),
		"etc/ssh/ssh_host_ecdsa_key.pub":      fmt.Sprintf("-rw-r--r-- %q", ec.Public+"\n"),
		"etc/ssh/sshd_config":                 fmt.Sprintf("-rw-r--r-- %q", "# keep\n"),
		"etc/ssh/ssh_host_ed25519_key-cert":   fmt.Sprintf("-rw-r--r-- %q", "# not a key file: kept\n"),
		"run/systemd/network/50-eth0.network": fmt.Sprintf("-rw-r--r-- %q", "# the admin's: kept\n"),
		"run/systemd/network/10-banger-eth0.network": fmt.Sprintf("-rw-r--r-- %q", "# banger: this VM's own address (identity request), replacing the ip= one\n"+
			"[Match]\nName=eth0\n\n[Link]\nMACAddress=52:54:00:aa:bb:02\n\n[Network]\nAddress=10.77.0.9/24\nGateway=10.77.0.1\nDNS=10.77.0.1\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"),
		"run/systemd/network/70-eth1.network": fmt.Sprintf("-rw-r--r-- %q", "[Match]\nName=eth1\n"),
		"run/systemd/netif/links/2":           fmt.Sprintf("-rw-r--r-- %q", ""),
		"var/lib/dbus/machine-id":             "", // the symlink: Walk sees it as a file
	}
	got := readTree(t, root)
	delete(got, "var/lib/dbus/machine-id")
	delete(want, "var/lib/dbus/machine-id")
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s:\n got %s\nwant %s", p, got[p], w)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s left behind: %s", p, got[p])
		}
	}
	if l, err := os.Readlink(filepath.Join(root, "var/lib/dbus/machine-id")); err != nil || l != "/etc/machine-id" {
		t.Errorf("dbus machine-id symlink: %q, %v", l, err)
	}
}

// A dbus machine-id file of its own is rewritten too; no hosts line, no
// network files, no units to restart are fine.
func TestIdentityStepsMinimalRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"etc/ssh", "var/lib/dbus"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dbus/machine-id"), []byte("old\n"), 0o444)
	f := &fakeGuestEnv{}
	id := testIdentity()
	id.Restart = nil
	if res := f.env(root).apply(context.Background(), id); !res.OK {
		t.Fatalf("apply = %+v", res)
	}
	for _, c := range f.calls {
		if strings.HasPrefix(c, "systemctl") {
			t.Errorf("ran %q with no units to restart", c)
		}
	}
	for p, want := range map[string]string{
		"var/lib/dbus/machine-id": id.MachineID + "\n", "etc/machine-id": id.MachineID + "\n",
		"etc/hosts": "127.0.1.1 child-1.vm child-1\n", "etc/resolv.conf": "nameserver 10.77.0.1\n",
	} {
		if b, _ := os.ReadFile(filepath.Join(root, p)); string(b) != want {
			t.Errorf("%s = %q, want %q", p, b, want)
		}
	}
}

func TestRestartable(t *testing.T) {
	got := restartable([]byte(showAnswer + "\nId=opencode2.service\nLoadState=loaded\nActiveState=inactive\nUnitFileState=enabled\n"))
	if want := []string{"ssh.service", "opencode2.service"}; !reflect.DeepEqual(got, want) {
		t.Errorf("restartable = %q, want %q", got, want)
	}
}

// newPairServer is newPair with the given server.
func newPairServer(t *testing.T, srv *Server) *Client {
	t.Helper()
	host, guest := socketPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, guest) }()
	c, err := NewClient(host)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
		<-done
	})
	return c
}

func TestSetIdentityRoundTrip(t *testing.T) {
	root := parentRoot(t)
	f := &fakeGuestEnv{show: showAnswer}
	srv := NewServer(testLogger(), "test")
	srv.ident = f.env(root)
	c := newPairServer(t, srv)
	res, err := c.SetIdentity(testCtx(t), testIdentity())
	if err != nil || !res.OK || len(res.Steps) != len(identitySteps) {
		t.Fatalf("SetIdentity = %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/hostname")); string(b) != "child-1\n" {
		t.Errorf("hostname file %q", b)
	}
	for _, s := range res.Steps {
		if s.MS < 0 || s.Error != "" {
			t.Errorf("step %+v", s)
		}
	}
}

// A failing step fails the op with its name; the later steps do not run.
func TestSetIdentityStepFails(t *testing.T) {
	root := parentRoot(t)
	f := &fakeGuestEnv{show: showAnswer, failLink: errors.New("no such device")}
	srv := NewServer(testLogger(), "test")
	srv.ident = f.env(root)
	c := newPairServer(t, srv)
	res, err := c.SetIdentity(testCtx(t), testIdentity())
	if err == nil || !strings.Contains(err.Error(), "step interface: no such device") || res.OK || res.Step != "interface" {
		t.Fatalf("SetIdentity = %+v, %v; want the interface step's error", res, err)
	}
	if last := res.Steps[len(res.Steps)-1]; last.Name != "interface" || last.Error == "" || len(res.Steps) != 6 {
		t.Errorf("steps %+v, want 6 ending with the failed interface step", res.Steps)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/resolv.conf")); !strings.Contains(string(b), "10.77.0.254") {
		t.Errorf("resolv.conf changed after the failed step: %q", b)
	}
}

// Bad input is refused before anything changes: by the client (nothing
// sent) and by the guest for a request written by hand.
func TestSetIdentityBadInput(t *testing.T) {
	root := parentRoot(t)
	before := readTree(t, root)
	f := &fakeGuestEnv{show: showAnswer}
	srv := NewServer(testLogger(), "test")
	srv.ident = f.env(root)
	c := newPairServer(t, srv)
	bad := []func(*Identity){
		func(id *Identity) { id.MAC = "not-a-mac" },
		func(id *Identity) { id.Address = "10.77.0.9/33" },
		func(id *Identity) { id.Hostname = "a/b" },
		func(id *Identity) { id.MachineID = "xyz" },
		func(id *Identity) { id.Entropy = id.Entropy[:10] },
		func(id *Identity) {
			id.HostKeys = map[string]HostKey{"ed25519": {Private: strings.Repeat("x", 20<<10), Public: "x"}}
		},
	}
	for i, change := range bad {
		id := testIdentity()
		change(&id)
		if _, err := c.SetIdentity(testCtx(t), id); !api.IsInvalid(err) {
			t.Errorf("case %d: client: %v, want Invalid", i, err)
		}
		// The same request sent raw, past the client's check.
		stream, err := c.OpenStream(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		writeJSONLine(stream, Request{Op: OpIdentity, Identity: &id})
		line, err := readLine(bufio.NewReader(stream), maxIdentityAnswer)
		stream.Close()
		if err != nil || !strings.Contains(string(line), `"ok":false`) || !strings.Contains(string(line), "identity:") {
			t.Errorf("case %d: guest answered %s, %v; want a refusal", i, line, err)
		}
	}
	if len(f.calls) != 0 {
		t.Errorf("the guest acted on bad input: %q", f.calls)
	}
	if after := readTree(t, root); !reflect.DeepEqual(before, after) {
		t.Errorf("files changed on bad input:\n%v\n%v", before, after)
	}
}

// fakeGuest serves a yamux session answering every stream with answer.
func fakeGuest(t *testing.T, answer []byte) *Client {
	t.Helper()
	host, guest := socketPair(t)
	sess, err := yamux.Server(guest, sessionConfig(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			s, err := sess.AcceptStream()
			if err != nil {
				return
			}
			go func() {
				defer s.Close()
				bufio.NewReader(s).ReadString('\n')
				s.Write(answer)
			}()
		}
	}()
	c, err := NewClient(host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sess.Close() })
	return c
}

func TestSetIdentityOldAgent(t *testing.T) {
	c := fakeGuest(t, []byte(`{"ok":false,"error":"unknown op \"identity\" (want health, exec, pty, dial or clock)"}`+"\n"))
	_, err := c.SetIdentity(testCtx(t), testIdentity())
	if !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "older banger") {
		t.Errorf("SetIdentity through an old agent: %v", err)
	}
}

// A hostile guest's answer is bounded in bytes and steps.
func TestSetIdentityHostileAnswer(t *testing.T) {
	huge := `{"ok":true,"steps":[{"name":"` + strings.Repeat("x", maxIdentityAnswer) + `"}]}` + "\n"
	var many strings.Builder
	many.WriteString(`{"ok":true,"steps":[`)
	for i := range maxIdentityAnswerSt + 1 {
		if i > 0 {
			many.WriteByte(',')
		}
		many.WriteString(`{"name":"s","ms":1}`)
	}
	many.WriteString("]}\n")
	for name, answer := range map[string]string{"huge": huge, "many steps": many.String(), "not json": "<html>\n"} {
		c := fakeGuest(t, []byte(answer))
		if _, err := c.SetIdentity(testCtx(t), testIdentity()); err == nil || !api.IsUnavailable(err) {
			t.Errorf("%s answer: %v, want Unavailable", name, err)
		}
	}
}

// TestAddEntropy credits real random bytes to this kernel's RNG (harmless:
// rngd does the same) and reseeds; it needs root.
func TestAddEntropy(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("RNDADDENTROPY needs root (CAP_SYS_ADMIN): run as root")
	}
	b := make([]byte, 64)
	rand.Read(b)
	if err := addEntropy(b); err != nil {
		t.Fatalf("addEntropy: %v", err)
	}
}
