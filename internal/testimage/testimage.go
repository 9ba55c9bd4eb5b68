// Package testimage provides the small Debian image the test suite boots.
// It is built with the same recipe as `banger image create` (no extras),
// once per machine, and cached under DefaultCacheDir (or $BANGER_TEST_CACHE)
// in images/test-<recipe fingerprint>/. The fingerprint covers the builder's
// recipe version and source, the suite and packages, the mirror, the guest
// agent binary's hash and the test SSH key, so changing any of them builds a
// fresh image. A file lock lets concurrent test packages share one build; a
// "complete" file, written last, marks a finished one.
package testimage

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/feature"
	"banger/internal/image"
	"banger/internal/image/debian"
)

// DefaultCacheDir is where the test image lives unless $BANGER_TEST_CACHE
// says otherwise.
const DefaultCacheDir = "/var/cache/banger-test"

// EnvCacheDir overrides DefaultCacheDir.
const EnvCacheDir = "BANGER_TEST_CACHE"

// EnvAgentBin, when set, names a prebuilt static banger-agent to bake
// instead of building ./cmd/banger-agent.
const EnvAgentBin = "BANGER_AGENT_BIN"

// Suite is the Debian suite of the test image.
const Suite = debian.DefaultSuite

const (
	completeFile = "complete"
	metaFile     = "image.json"
	buildTimeout = 30 * time.Minute
)

// CacheDir returns the cache directory in use.
func CacheDir() string {
	if d := os.Getenv(EnvCacheDir); d != "" {
		return d
	}
	return DefaultCacheDir
}

// KeyPath returns the private half of the test SSH key baked into test
// images built under cacheDir.
func KeyPath(cacheDir string) string { return filepath.Join(cacheDir, "ssh", "id_ed25519") }

// AgentBin returns where Ensure puts the guest agent it builds.
func AgentBin(cacheDir string) string { return filepath.Join(cacheDir, "bin", "banger-agent") }

// Ensure returns the cached test image under cacheDir, building it first
// when no complete build of the current recipe exists. Progress (stage
// starts at Debug, stage timings at Info) goes to log.
func Ensure(ctx context.Context, cacheDir string, log *slog.Logger) (api.Image, error) {
	return ensure(ctx, cacheDir, log, variantTest)
}

// EnsureOpencode is Ensure for the opencode variant: the test image's
// recipe plus --with opencode (Node.js, opencode-ai from npm and its
// service on port 4096), cached as images/opencode-<recipe fingerprint>.
// A cold build takes about 3 minutes, most of it npm.
func EnsureOpencode(ctx context.Context, cacheDir string, log *slog.Logger) (api.Image, error) {
	return ensure(ctx, cacheDir, log, variantOpencode)
}

// variant is one cached image recipe: a name prefix and its features.
type variant struct {
	prefix string
	with   []string
}

var (
	variantTest     = variant{prefix: "test-"}
	variantOpencode = variant{prefix: "opencode-", with: []string{feature.Opencode.Name}}
)

func ensure(ctx context.Context, cacheDir string, log *slog.Logger, v variant) (api.Image, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, d := range []string{"bin", "images", "staging", "ssh"} {
		if err := os.MkdirAll(filepath.Join(cacheDir, d), 0o755); err != nil {
			return api.Image{}, fmt.Errorf("creating test cache: %w", err)
		}
	}
	agentBin, err := ensureAgent(ctx, cacheDir)
	if err != nil {
		return api.Image{}, err
	}
	lock := flock.New(filepath.Join(cacheDir, "images.lock"))
	if _, err := lock.TryLockContext(ctx, 200*time.Millisecond); err != nil {
		return api.Image{}, fmt.Errorf("locking the test image cache: %w", err)
	}
	defer lock.Unlock()

	pub, err := config.EnsureSSHKey(KeyPath(cacheDir))
	if err != nil {
		return api.Image{}, fmt.Errorf("test ssh key: %w", err)
	}
	req := api.ImageCreateRequest{Suite: Suite, Mirror: debian.HostMirror(), With: v.with}
	recipe, err := debian.NewRecipe(req, agentBin, pub)
	if err != nil {
		return api.Image{}, err
	}
	fp := recipe.Fingerprint()
	req.Name = v.prefix + fp[:16]
	dir := filepath.Join(cacheDir, "images", req.Name)
	if img, err := readComplete(dir); err == nil {
		return img, nil
	}
	log.Info("building a test image", "dir", dir, "recipe", fp[:16])
	if err := os.RemoveAll(dir); err != nil { // an incomplete earlier build
		return api.Image{}, err
	}
	if err := image.CleanStaging(filepath.Join(cacheDir, "staging")); err != nil {
		return api.Image{}, err
	}
	b := &debian.Maker{ImagesDir: filepath.Join(cacheDir, "images"), StagingDir: filepath.Join(cacheDir, "staging"),
		AgentBin: agentBin, SSHPubKey: pub, Log: log}
	start := time.Now()
	img, err := b.FromDebian(ctx, req, nil) // the builder logs its stages to log
	if err != nil {
		return api.Image{}, fmt.Errorf("building the test image: %w", err)
	}
	log.Info("test image built", "dir", dir, "duration", time.Since(start).Round(time.Millisecond),
		"rootfs_mib", img.RootfsSize>>20, "kernel", img.KernelVersion)
	if err := writeComplete(dir, img); err != nil {
		return api.Image{}, err
	}
	pruneStale(filepath.Join(cacheDir, "images"), v.prefix, req.Name, log)
	return img, nil
}

// staleAfter is how old another recipe's test image must be before a new
// build removes it (a concurrent run of older code may still boot it).
const staleAfter = time.Hour

// pruneStale removes test images of other recipes finished more than
// staleAfter ago, so recipe changes do not fill the disk.
func pruneStale(imagesDir, prefix, keep string, log *slog.Logger) {
	ents, _ := os.ReadDir(imagesDir)
	for _, e := range ents {
		if e.Name() == keep || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		fi, err := os.Stat(filepath.Join(imagesDir, e.Name(), completeFile))
		if err != nil || time.Since(fi.ModTime()) < staleAfter {
			continue
		}
		if err := os.RemoveAll(filepath.Join(imagesDir, e.Name())); err == nil {
			log.Info("removed a stale test image", "dir", e.Name())
		}
	}
}

// readComplete loads a finished build's metadata.
func readComplete(dir string) (api.Image, error) {
	if _, err := os.Stat(filepath.Join(dir, completeFile)); err != nil {
		return api.Image{}, err
	}
	b, err := os.ReadFile(filepath.Join(dir, metaFile))
	if err != nil {
		return api.Image{}, err
	}
	var img api.Image
	if err := json.Unmarshal(b, &img); err != nil {
		return api.Image{}, fmt.Errorf("reading %s: %w", metaFile, err)
	}
	return img, nil
}

// writeComplete writes the metadata, then the marker.
func writeComplete(dir string, img api.Image) error {
	b, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, metaFile), b, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, completeFile), []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644)
}

// ensureAgent builds ./cmd/banger-agent (static, reproducible) into the
// cache, or uses $BANGER_AGENT_BIN.
func ensureAgent(ctx context.Context, cacheDir string) (string, error) {
	if p := os.Getenv(EnvAgentBin); p != "" {
		return p, nil
	}
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" || strings.TrimSpace(string(gomod)) == os.DevNull {
		return "", fmt.Errorf("finding the banger module to build the agent (run inside the repo, or set %s): %v",
			EnvAgentBin, err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dst := AgentBin(cacheDir)
	tmpDir, err := os.MkdirTemp(filepath.Dir(dst), ".agent-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmpDir)
	tmp := filepath.Join(tmpDir, "banger-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-o", tmp, "./cmd/banger-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the guest agent: %w\n%s", err, out)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	return dst, nil
}

var (
	getMu    sync.Mutex
	getCache = map[string]api.Image{} // by cache dir and variant; guarded by getMu
)

// Get returns the test image for a test, building it on first use (several
// minutes on a cold cache). It skips when the host cannot build images
// (not root, no debootstrap) with the fix in the message, and fails the test
// when the build fails.
func Get(t testing.TB) api.Image {
	t.Helper()
	return get(t, variantTest)
}

// GetOpencode returns the opencode variant (see EnsureOpencode) for a test,
// building it on first use; it skips and fails like Get.
func GetOpencode(t testing.TB) api.Image {
	t.Helper()
	return get(t, variantOpencode)
}

func get(t testing.TB, v variant) api.Image {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("building the test image needs root (debootstrap, chroot mounts): run the tests as root")
	}
	for _, tool := range []string{"debootstrap", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: apt-get install debootstrap e2fsprogs", tool)
		}
	}
	dir := CacheDir()
	getMu.Lock()
	defer getMu.Unlock()
	key := dir + "\x00" + v.prefix
	if img, ok := getCache[key]; ok {
		return img
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	img, err := ensure(ctx, dir, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), v)
	if err != nil {
		t.Fatalf("test image %s: %v", strings.TrimSuffix(v.prefix, "-"), err)
	}
	getCache[key] = img
	return img
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
