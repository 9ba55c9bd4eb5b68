package testimage

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"banger/internal/api"
)

func TestCompleteRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if _, err := readComplete(dir); err == nil {
		t.Fatal("an empty dir reads as complete")
	}
	img := api.Image{Name: "test-x", Dir: dir, Rootfs: filepath.Join(dir, "rootfs.ext4"), Engines: []string{"qemu"}}
	if err := writeComplete(dir, img); err != nil {
		t.Fatal(err)
	}
	got, err := readComplete(dir)
	if err != nil || got.Name != img.Name || got.Rootfs != img.Rootfs {
		t.Fatalf("readComplete = %+v, %v", got, err)
	}
	os.Remove(filepath.Join(dir, completeFile))
	if _, err := readComplete(dir); err == nil {
		t.Fatal("metadata without the marker reads as complete")
	}
}

// TestIntegrationEnsureShared: concurrent callers get the same cached
// image (built at most once, under the lock); a warm cache answers fast.
func TestIntegrationEnsureShared(t *testing.T) {
	img := Get(t) // builds on a cold cache
	// Pin the agent Get baked: the agent's source may change while the
	// suite runs, and a new agent binary rightly means a new image.
	agent := filepath.Join(t.TempDir(), "banger-agent")
	if b, err := os.ReadFile(AgentBin(CacheDir())); err != nil || os.WriteFile(agent, b, 0o755) != nil {
		t.Fatalf("copying the agent: %v", err)
	}
	t.Setenv(EnvAgentBin, agent)
	start := time.Now()
	var wg sync.WaitGroup
	results := make([]api.Image, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = Ensure(context.Background(), CacheDir(), nil)
		}()
	}
	wg.Wait()
	for i := range results {
		if errs[i] != nil || results[i].Dir != results[0].Dir || results[i].Fingerprint != results[0].Fingerprint {
			t.Fatalf("caller %d: %s, %v; caller 0 got %s", i, results[i].Dir, errs[i], results[0].Dir)
		}
	}
	if results[0].Dir != img.Dir {
		t.Logf("the agent changed after Get: one shared rebuild into %s", results[0].Dir)
	}
	img = results[0]
	t.Logf("3 concurrent warm-cache Ensure calls: %v", time.Since(start).Round(time.Millisecond))
	for _, p := range []string{img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed, KeyPath(CacheDir())} {
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
}
