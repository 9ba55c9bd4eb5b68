package debian_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
	"banger/internal/image/debian"
	"banger/internal/progress"
)

// fakeAgent is enough of an agent binary for the checks that run before
// any build work.
func fakeAgent(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "banger-agent")
	if err := os.WriteFile(p, []byte("\x7fELF\x02\x01\x01 fake agent"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func newMaker(t *testing.T) *debian.Maker {
	state := t.TempDir()
	return &debian.Maker{ImagesDir: filepath.Join(state, "images"), StagingDir: filepath.Join(state, "staging"),
		AgentBin: fakeAgent(t), SSHPubKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFake test"}
}

// assertNoStaging checks a failed build left nothing in the staging dir.
func assertNoStaging(t *testing.T, b *debian.Maker) {
	t.Helper()
	ents, _ := os.ReadDir(b.StagingDir)
	if len(ents) > 0 {
		t.Fatalf("staging dir not cleaned: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(b.ImagesDir, "img")); err == nil {
		t.Fatal("a failed build left an image dir")
	}
}

func TestFromDebianBadInput(t *testing.T) {
	if len(debian.Suites()) == 0 {
		t.Skip("no debootstrap scripts: apt-get install debootstrap")
	}
	cases := []struct {
		name   string
		setup  func(b *debian.Maker, req *api.ImageCreateRequest)
		kind   api.Kind
		want   string
		within time.Duration
	}{
		{"unknown suite", func(b *debian.Maker, req *api.ImageCreateRequest) { req.Suite = "narnia" },
			api.KindInvalid, "known Debian suites: ", time.Second},
		{"name clash", func(b *debian.Maker, req *api.ImageCreateRequest) {
			os.MkdirAll(filepath.Join(b.ImagesDir, "img"), 0o755)
		}, api.KindAlreadyExists, "already exists", time.Second},
		{"missing debootstrap", func(b *debian.Maker, req *api.ImageCreateRequest) {
			b.Debootstrap = "/nonexistent/debootstrap"
		}, api.KindFailedPrecondition, "apt-get install debootstrap e2fsprogs", time.Second},
		{"no agent", func(b *debian.Maker, req *api.ImageCreateRequest) { b.AgentBin = "/nonexistent/agent" },
			api.KindFailedPrecondition, "go build", time.Second},
		{"unreachable mirror", func(b *debian.Maker, req *api.ImageCreateRequest) {
			b.Mirror = "http://127.0.0.1:1/debian"
		}, api.KindUnavailable, "debian_mirror", 6 * time.Second},
		{"request names another mirror", func(b *debian.Maker, req *api.ImageCreateRequest) {
			b.Mirror = "http://deb.debian.org/debian"
			req.Mirror = "http://evil.example/debian"
		}, api.KindInvalid, "debian_mirror", time.Second},
		{"missing keyring", func(b *debian.Maker, req *api.ImageCreateRequest) {
			b.Keyring = "/nonexistent/keyring.gpg"
		}, api.KindFailedPrecondition, "apt-get install debian-archive-keyring", time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newMaker(t)
			req := api.ImageCreateRequest{Name: "img"}
			tc.setup(b, &req)
			if strings.Contains(tc.name, "debootstrap") || tc.name == "unreachable mirror" {
				if _, err := exec.LookPath("mkfs.ext4"); err != nil {
					t.Skip("no mkfs.ext4: apt-get install e2fsprogs")
				}
			}
			if tc.name == "unreachable mirror" {
				if _, err := exec.LookPath("debootstrap"); err != nil {
					t.Skip("no debootstrap: apt-get install debootstrap")
				}
			}
			start := time.Now()
			_, err := b.FromDebian(context.Background(), req, progress.Nop{})
			if api.KindOf(err) != tc.kind || !strings.Contains(api.AsError(err).Error(), tc.want) {
				t.Fatalf("err = %v (kind %s), want %s mentioning %q", err, api.KindOf(err), tc.kind, tc.want)
			}
			if d := time.Since(start); d > tc.within {
				t.Fatalf("took %v, want under %v", d, tc.within)
			}
			if tc.name != "name clash" {
				assertNoStaging(t, b)
			}
			t.Logf("%v", err)
		})
	}
}

// TestIntegrationFromDebianCancel cancels a real build while debootstrap
// runs: the error must say so, the staging dir must be gone, nothing may
// stay mounted below it and no process may remain inside it.
func TestIntegrationFromDebianCancel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("image builds need root (debootstrap, chroot mounts): run the tests as root")
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		t.Skip("no debootstrap: apt-get install debootstrap e2fsprogs")
	}
	b := newMaker(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep := &cancelOn{match: "I: Installing core packages", cancel: cancel}
	timer := time.AfterFunc(3*time.Minute, cancel) // fallback: cancel mid-build regardless
	defer timer.Stop()
	start := time.Now()
	_, err := b.FromDebian(ctx, api.ImageCreateRequest{Name: "img"}, rep)
	if err == nil || !strings.Contains(err.Error(), "cancel") {
		t.Fatalf("err = %v, want a cancellation", err)
	}
	t.Logf("cancelled after %v (matched %q: %v): %v", time.Since(start).Round(time.Millisecond), rep.match,
		rep.matched(), err)
	assertNoStaging(t, b)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), b.StagingDir) {
		t.Fatalf("still mounted below %s:\n%s", b.StagingDir, mi)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/root")
	for _, p := range procs {
		if root, err := os.Readlink(p); err == nil && strings.HasPrefix(root, b.StagingDir) {
			t.Fatalf("process %s still runs inside %s", p, root)
		}
	}
}

// cancelOn cancels when an output line contains match.
type cancelOn struct {
	progress.Nop
	match  string
	cancel func()
	mu     sync.Mutex
	hit    bool // guarded by mu
}

func (c *cancelOn) Output(line string) {
	if strings.Contains(line, c.match) {
		c.mu.Lock()
		c.hit = true
		c.mu.Unlock()
		c.cancel()
	}
}

func (c *cancelOn) matched() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hit
}
