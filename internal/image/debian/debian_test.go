package debian

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
)

func TestHostMirror(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"none", nil, DefaultMirror},
		{"one-line", map[string]string{"sources.list": "# c\ndeb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian/ bookworm main\n"},
			"http://ftp.de.debian.org/debian"},
		{"deb822", map[string]string{"sources.list.d/debian.sources": "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"},
			"http://mirror.example/debian"},
		{"security only", map[string]string{"sources.list.d/debian.sources": "Types: deb\nURIs: http://deb.debian.org/debian-security\n"},
			DefaultMirror},
		{"other repo first", map[string]string{
			"sources.list":                  "deb https://packages.cloud.google.com/apt cloud-sdk main\n",
			"sources.list.d/debian.sources": "URIs: https://local.mirror/debian/\n"},
			"https://local.mirror/debian"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				p := filepath.Join(dir, name)
				os.MkdirAll(filepath.Dir(p), 0o755)
				if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if got := hostMirror(dir); got != tc.want {
				t.Fatalf("hostMirror = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRootfsSize(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name      string
		used, req int64
		want      int64
		wantErr   bool
	}{
		{"small tree gets the minimum", 300 * mib, 0, image.MinAutoSize, false},
		{"large tree gets headroom", 2000 * mib, 0, 2752 * mib, false},
		{"requested fits", 300 * mib, 2048 * mib, 2048 * mib, false},
		{"requested too small", 900 * mib, 900 * mib, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rootfsSize(tc.used, tc.req)
			if tc.wantErr {
				if !api.IsInvalid(err) || !strings.Contains(err.Error(), "--size") {
					t.Fatalf("err = %v, want Invalid naming --size", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("rootfsSize = %d MiB, %v; want %d MiB", got/mib, err, tc.want/mib)
			}
			if got < tc.used {
				t.Fatalf("size %d below used %d", got, tc.used)
			}
		})
	}
}

func TestCheckRequest(t *testing.T) {
	images := t.TempDir()
	os.Mkdir(filepath.Join(images, "taken"), 0o755)
	b := &Maker{ImagesDir: images}
	hasBookworm := len(Suites()) > 0
	cases := []struct {
		name string
		req  api.ImageCreateRequest
		kind api.Kind
		want string
	}{
		{"bad name", api.ImageCreateRequest{Name: "Bad_Name"}, api.KindInvalid, "name"},
		{"other mirror", api.ImageCreateRequest{Name: "a", Mirror: "ftp://x"}, api.KindInvalid, "debian_mirror"},
		{"bad package", api.ImageCreateRequest{Name: "a", Packages: []string{"rm -rf"}}, api.KindInvalid, "package"},
		{"bad feature", api.ImageCreateRequest{Name: "a", With: []string{"emacs"}}, api.KindInvalid, "opencode"},
		{"tiny size", api.ImageCreateRequest{Name: "a", Size: 10 << 20}, api.KindInvalid, "--size"},
		{"suite path", api.ImageCreateRequest{Name: "a", Suite: "../etc"}, api.KindInvalid, "suite"},
	}
	if hasBookworm {
		cases = append(cases,
			struct {
				name string
				req  api.ImageCreateRequest
				kind api.Kind
				want string
			}{"unknown suite", api.ImageCreateRequest{Name: "a", Suite: "narnia"}, api.KindInvalid, "bookworm"},
			struct {
				name string
				req  api.ImageCreateRequest
				kind api.Kind
				want string
			}{"name clash", api.ImageCreateRequest{Name: "taken"}, api.KindAlreadyExists, "taken"},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := b.checkRequest(&tc.req)
			if api.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v (kind %s), want %s mentioning %q", err, api.KindOf(err), tc.kind, tc.want)
			}
		})
	}
	req := api.ImageCreateRequest{Name: "fresh"}
	if err := b.checkRequest(&req); hasBookworm && err != nil {
		t.Fatalf("valid request: %v", err)
	}
	if req.Suite != DefaultSuite || req.Mirror == "" {
		t.Fatalf("defaults not filled: %+v", req)
	}
	// An old client's --mirror naming the configured mirror is accepted.
	same := api.ImageCreateRequest{Name: "fresh", Mirror: b.mirror() + "/"}
	if err := b.checkRequest(&same); hasBookworm && err != nil {
		t.Fatalf("a request naming the configured mirror: %v", err)
	}
	bad := &Maker{ImagesDir: images, Mirror: "ftp://x"}
	if err := bad.checkRequest(&api.ImageCreateRequest{Name: "fresh"}); !api.IsInvalid(err) || !strings.Contains(err.Error(), "debian_mirror") {
		t.Fatalf("a non-http debian_mirror: %v", err)
	}
}

func TestWriteFileRefusesSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	os.Symlink(outside, filepath.Join(root, "etc"))
	if err := writeFile(root, "etc/passwd", 0o644, []byte("x")); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Fatalf("writeFile through a symlinked parent: %v", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "passwd")); err == nil {
		t.Fatal("wrote outside the root")
	}
	// A symlinked file is replaced, not followed.
	os.Mkdir(filepath.Join(root, "run"), 0o755)
	target := filepath.Join(outside, "resolv.conf")
	os.WriteFile(target, []byte("host"), 0o644)
	os.Symlink(target, filepath.Join(root, "run", "resolv.conf"))
	if err := writeFile(root, "run/resolv.conf", 0o600, []byte("guest")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "host" {
		t.Fatalf("followed the symlink: host file now %q", b)
	}
	fi, _ := os.Lstat(filepath.Join(root, "run", "resolv.conf"))
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
}

func TestRecipeFingerprint(t *testing.T) {
	agent := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(agent, []byte("\x7fELF agent v1"), 0o755)
	req := api.ImageCreateRequest{Suite: "bookworm", Mirror: DefaultMirror, Packages: []string{"vim", "htop"}}
	r1, err := NewRecipe(req, agent, "ssh-ed25519 AAAA key")
	if err != nil {
		t.Fatal(err)
	}
	req.Packages = []string{"htop", "vim", "vim"}
	r2, _ := NewRecipe(req, agent, "ssh-ed25519 AAAA key")
	if r1.Fingerprint() != r2.Fingerprint() {
		t.Fatal("package order changed the fingerprint")
	}
	os.WriteFile(agent, []byte("\x7fELF agent v2"), 0o755)
	r3, _ := NewRecipe(req, agent, "ssh-ed25519 AAAA key")
	if r3.Fingerprint() == r1.Fingerprint() {
		t.Fatal("a new agent binary kept the fingerprint")
	}
	if !strings.HasPrefix(r1.Builder, RecipeVersion+"-") {
		t.Fatalf("builder version %q", r1.Builder)
	}
}
