package debian

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/vmlinux"
	"banger/internal/names"
)

// Defaults and limits of image create.
const (
	DefaultSuite  = "bookworm"
	DefaultMirror = "http://deb.debian.org/debian"
	// MinFreeBytes is the free space image create needs in the state dir.
	MinFreeBytes = 3 << 30
	// mirrorTimeout bounds the mirror reachability probe.
	mirrorTimeout = 5 * time.Second
	// debootstrapScripts is where debootstrap keeps one script per suite.
	debootstrapScripts = "/usr/share/debootstrap/scripts"
	aptFix             = "apt-get install debootstrap e2fsprogs"
	// ArchiveKeyring verifies what debootstrap downloads (--force-check-gpg).
	ArchiveKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
)

var packageRE = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)

// checkRequest validates everything about a create request that needs no
// network or disk work, and fills in defaults.
func (b *Maker) checkRequest(req *api.ImageCreateRequest) error {
	if err := names.Validate(req.Name); err != nil {
		return fmt.Errorf("image name: %w", err)
	}
	if req.Suite == "" {
		req.Suite = DefaultSuite
	}
	mirror := b.mirror()
	if !strings.HasPrefix(mirror, "http://") && !strings.HasPrefix(mirror, "https://") {
		return api.Invalid("debian_mirror %q is not an http(s) URL", mirror).
			WithFix("set debian_mirror = \"http://deb.debian.org/debian\" in bangerd's config and restart it")
	}
	// The mirror is the host's decision, not a caller's: an old client's
	// --mirror is accepted only when it names the configured one.
	if req.Mirror != "" && strings.TrimRight(req.Mirror, "/") != mirror {
		return api.Invalid("mirror %q: images are made from the configured Debian mirror (debian_mirror = %q), a request cannot pick another", req.Mirror, mirror).
			WithFix("leave --mirror out, or set debian_mirror in bangerd's config and restart it")
	}
	req.Mirror = mirror
	for _, p := range req.Packages {
		if !packageRE.MatchString(p) {
			return api.Invalid("package %q is not a valid Debian package name", p).
				WithFix("--packages name1,name2 (lowercase Debian package names)")
		}
	}
	if err := image.CheckFeatures(req.With); err != nil {
		return err
	}
	if req.Size != 0 && req.Size < image.MinRootfsSize {
		return api.Invalid("--size %d MiB is too small for a Debian root filesystem", req.Size>>20).
			WithFix(fmt.Sprintf("--size %dMiB or more, or leave it out to fit the contents", image.MinRootfsSize>>20))
	}
	if err := b.checkSuite(req.Suite); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(b.ImagesDir, req.Name)); err == nil {
		return api.AlreadyExists("image directory %s already exists", filepath.Join(b.ImagesDir, req.Name)).
			WithFix("pick another name, or delete the image first").WithAction("image delete", req.Name)
	}
	return nil
}

// checkTools makes sure the host binaries the build runs exist.
func (b *Maker) checkTools() error {
	tools := []string{b.debootstrapBin(), "mkfs.ext4", "e2fsck", "resize2fs", "chroot"}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			return api.FailedPrecondition("%s not found on this host", t).WithFix(aptFix)
		}
	}
	if fi, err := os.Stat(b.keyring()); err != nil || !fi.Mode().IsRegular() {
		return api.FailedPrecondition("the Debian archive keyring %s is missing: debootstrap's downloads cannot be verified", b.keyring()).
			WithFix("apt-get install debian-archive-keyring")
	}
	if b.AgentBin == "" {
		return api.FailedPrecondition("no guest agent binary configured").
			WithFix("build it (CGO_ENABLED=0 go build -o banger-agent ./cmd/banger-agent) and set agent_bin in the config")
	}
	head, err := image.ReadHead(b.AgentBin, 4)
	if err != nil || !vmlinux.IsELF(head) {
		return api.FailedPrecondition("guest agent %s is not a Linux executable: %v", b.AgentBin, errOrNotELF(err)).
			WithFix("rebuild it: CGO_ENABLED=0 go build -o banger-agent ./cmd/banger-agent")
	}
	return nil
}

func errOrNotELF(err error) error {
	if err != nil {
		return err
	}
	return errors.New("no ELF magic")
}

func (b *Maker) keyring() string {
	if b.Keyring != "" {
		return b.Keyring
	}
	return ArchiveKeyring
}

func (b *Maker) debootstrapBin() string {
	if b.Debootstrap != "" {
		return b.Debootstrap
	}
	return "debootstrap"
}

// Suites lists the suites debootstrap on this host knows, image.Sorted.
func Suites() []string {
	ents, _ := os.ReadDir(debootstrapScripts)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func (b *Maker) checkSuite(suite string) error {
	if strings.ContainsAny(suite, "/.") || suite == "" {
		return api.Invalid("suite %q is not a suite name", suite).WithFix("e.g. bookworm or trixie")
	}
	if _, err := os.Stat(filepath.Join(debootstrapScripts, suite)); err != nil {
		debian := []string{}
		for _, s := range []string{"bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing", "unstable"} {
			if slices.Contains(Suites(), s) {
				debian = append(debian, s)
			}
		}
		return api.Invalid("unknown suite %q: debootstrap has no script for it (known Debian suites: %s)",
			suite, strings.Join(debian, ", ")).
			WithFix("use one of those, or update debootstrap for newer suites: apt-get install debootstrap")
	}
	return nil
}

// checkFreeSpace needs MinFreeBytes free where the build happens.
func checkFreeSpace(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking free space in %s: %w", dir, err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	if free < MinFreeBytes {
		return api.FailedPrecondition("only %d MiB free in %s; building an image needs %d MiB",
			free>>20, dir, MinFreeBytes>>20).WithFix("free some space, or move state_dir to a larger filesystem")
	}
	return nil
}

// checkMirror fetches <mirror>/dists/<suite>/Release with a short timeout.
func checkMirror(ctx context.Context, mirror, suite string) error {
	ctx, cancel := context.WithTimeout(ctx, mirrorTimeout)
	defer cancel()
	url := mirror + "/dists/" + suite + "/Release"
	fix := "check the network, or point debian_mirror in bangerd's config at a reachable Debian mirror URL"
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, url, nil)
	if err != nil {
		return api.Invalid("mirror %q: %w", mirror, err).WithFix("set debian_mirror in bangerd's config (e.g. http://deb.debian.org/debian) and restart it")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return api.Unavailable("debian mirror %s is unreachable: %w", mirror, err).WithFix(fix)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return api.Invalid("mirror %s has no suite %q (%s answered 404)", mirror, suite, url).
			WithFix("pick a suite the mirror carries, or set another debian_mirror in bangerd's config")
	}
	if resp.StatusCode >= 400 {
		return api.Unavailable("debian mirror %s answered %s for %s", mirror, resp.Status, url).WithFix(fix)
	}
	return nil
}

// mirror is the configured mirror (Maker.Mirror, else the host's apt's),
// without a trailing slash.
func (b *Maker) mirror() string {
	m := b.Mirror
	if m == "" {
		m = HostMirror()
	}
	return strings.TrimRight(m, "/")
}

// HostMirror returns the Debian mirror the host's apt uses (from
// /etc/apt/sources.list or /etc/apt/sources.list.d/*.sources|*.list), or
// DefaultMirror. Hosts that can reach only their configured mirror then
// build images without a --mirror flag.
func HostMirror() string {
	return hostMirror("/etc/apt")
}

func hostMirror(aptDir string) string {
	files := []string{filepath.Join(aptDir, "sources.list")}
	for _, pat := range []string{"*.sources", "*.list"} {
		m, _ := filepath.Glob(filepath.Join(aptDir, "sources.list.d", pat))
		files = append(files, m...)
	}
	for _, f := range files {
		if m := mirrorIn(f); m != "" {
			return m
		}
	}
	return DefaultMirror
}

// mirrorIn returns the first plain Debian archive URI in an apt sources
// file (one-line or deb822 format), skipping security and cdrom entries.
func mirrorIn(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		var uris []string
		switch {
		case strings.HasPrefix(line, "deb "):
			inOpts := false
			for _, tok := range strings.Fields(line)[1:] {
				if strings.HasPrefix(tok, "[") {
					inOpts = true
				}
				if inOpts {
					inOpts = !strings.HasSuffix(tok, "]")
					continue
				}
				uris = append(uris, tok)
				break
			}
		case strings.HasPrefix(line, "URIs:"):
			uris = strings.Fields(strings.TrimPrefix(line, "URIs:"))
		}
		for _, u := range uris {
			u = strings.TrimRight(u, "/")
			if (strings.HasPrefix(u, "http://") || strings.HasPrefix(u, "https://")) &&
				strings.HasSuffix(u, "/debian") {
				return u
			}
		}
	}
	return ""
}
