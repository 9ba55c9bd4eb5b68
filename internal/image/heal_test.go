package image_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/progress"
	"banger/internal/store"
)

// An image row from an early banger (kernel, initrd and rootfs only) gets
// a work-seed, a vmlinux, engines, features, sizes and a fingerprint,
// exactly once even when several heals race.
func TestHealOldImage(t *testing.T) {
	st, svc, dir, old := oldImages(t, "old")
	ctx := context.Background()
	files := api.Image{Kernel: old[0].Kernel, Initrd: old[0].Initrd, Rootfs: old[0].Rootfs}
	if !image.NeedsHeal(old[0]) {
		t.Fatal("NeedsHeal says an image without work-seed and fingerprint is complete")
	}

	var wg sync.WaitGroup
	recs := make([]*progress.Recorder, 4)
	results := make([]api.Image, 4)
	for i := range recs {
		recs[i] = &progress.Recorder{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			img, err := svc.Heal(ctx, old[0], recs[i])
			if err != nil {
				t.Error(err)
			}
			results[i] = img
		}()
	}
	wg.Wait()
	stages := 0
	for _, r := range recs {
		stages += len(r.Names())
	}
	if stages != 1 {
		t.Errorf("%d upgrade stages over 4 racing creates, want exactly 1", stages)
	}
	got, err := st.GetImage(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Fingerprint != got.Fingerprint {
			t.Errorf("result %d differs from the stored image", i)
		}
	}
	if image.NeedsHeal(got) {
		t.Fatalf("stored image still needs healing: %+v", got)
	}
	if got.WorkSeed == "" || got.Vmlinux == "" || got.WorkSeedSize == 0 || got.VmlinuxSize == 0 || got.RootfsSize == 0 {
		t.Errorf("artefacts not filled: %+v", got)
	}
	if !slices.Equal(got.Engines, []string{"qemu", "firecracker"}) || got.KernelVersion != "6.1.0-test-amd64" {
		t.Errorf("engines %v kernel %q", got.Engines, got.KernelVersion)
	}
	if got.Dir != filepath.Join(dir, "images", "old") || !got.Managed {
		t.Errorf("new artefacts not in the images dir: dir %q managed %v", got.Dir, got.Managed)
	}
	if s, _ := debugfsCat(t, got.WorkSeed, "/.bashrc"); s != "# hello\n" {
		t.Errorf("work-seed lacks the rootfs's /root: %q", s)
	}
	// A complete image is returned as is, with no stage.
	rec := &progress.Recorder{}
	again, err := svc.Heal(ctx, got, rec)
	if err != nil || again.Fingerprint != got.Fingerprint || len(rec.Names()) != 0 {
		t.Errorf("healing a complete image: %v, stages %v", err, rec.Names())
	}
	// The original files are untouched; deleting removes only what banger made.
	if err := svc.Delete(ctx, "old", false); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{files.Kernel, files.Initrd, files.Rootfs} {
		if !fileExists(p) {
			t.Errorf("delete removed the original %s", p)
		}
	}
	if fileExists(got.WorkSeed) {
		t.Error("delete left the generated work-seed")
	}
}

// A rootfs that is gone is a clear FailedPrecondition, and nothing is stored.
func TestHealMissingRootfs(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st := imagetest.Store(t)
	old := api.Image{Name: "gone", Kernel: "/nonexistent/vmlinuz", Rootfs: "/nonexistent/rootfs.ext4"}
	if err := st.CreateImage(ctx, &old); err != nil {
		t.Fatal(err)
	}
	svc := &image.Service{Store: st, ImagesDir: filepath.Join(dir, "images")}
	_, err := svc.Heal(ctx, old, nil)
	if api.KindOf(err) != api.KindFailedPrecondition {
		t.Fatalf("err = %v, want FailedPrecondition", err)
	}
	got, _ := st.GetImage(ctx, "gone")
	if got.Fingerprint != "" {
		t.Error("a failed heal was stored")
	}
}

// The start-up data patch: an old-format image record gets what it lacks,
// the patch is recorded, and a later start does nothing. An image that
// cannot be healed fails the patch, which stays unrecorded (the next start
// tries again) while the other images are healed.
func TestHealAllAtStartup(t *testing.T) {
	st, svc, _, old := oldImages(t, "old")
	ctx := context.Background()
	gone := api.Image{Name: "gone", Kernel: "/nonexistent/vmlinuz", Rootfs: "/nonexistent/rootfs.ext4"}
	if err := st.CreateImage(ctx, &gone); err != nil {
		t.Fatal(err)
	}

	err := svc.HealAll(ctx)
	if err == nil || !strings.Contains(err.Error(), "image gone") {
		t.Fatalf("HealAll with a lost rootfs = %v, want an error naming it", err)
	}
	if got, _ := st.GetImage(ctx, "old"); image.NeedsHeal(got) {
		t.Errorf("the healable image was not healed: %+v", got)
	}
	if ok, _ := st.PatchApplied(ctx, image.PatchHealImages); ok {
		t.Error("a failed patch was recorded")
	}

	if err := svc.Delete(ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	if err := svc.HealAll(ctx); err != nil {
		t.Fatalf("HealAll: %v", err)
	}
	if ok, err := st.PatchApplied(ctx, image.PatchHealImages); !ok || err != nil {
		t.Fatalf("patch not recorded: %v %v", ok, err)
	}
	// Recorded: a later start leaves even an old-format record alone.
	later := api.Image{Name: "later", Kernel: old[0].Kernel, Initrd: old[0].Initrd, Rootfs: old[0].Rootfs}
	if err := st.CreateImage(ctx, &later); err != nil {
		t.Fatal(err)
	}
	if err := svc.HealAll(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetImage(ctx, "later"); !image.NeedsHeal(got) {
		t.Error("HealAll ran again after it was recorded")
	}
}

// oldImages opens a store in a temp dir holding image records in the
// format of an early banger (kernel, initrd and rootfs only), one per name,
// and an image service on it.
func oldImages(t *testing.T, names ...string) (*store.Store, *image.Service, string, []api.Image) {
	t.Helper()
	files := registerFiles(t)
	dir := t.TempDir()
	ctx := context.Background()
	st := imagetest.Store(t)
	var imgs []api.Image
	for _, n := range names {
		img := api.Image{Name: n, Kernel: files.Kernel, Initrd: files.Initrd, Rootfs: files.Rootfs}
		if err := st.CreateImage(ctx, &img); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	return st, &image.Service{Store: st, ImagesDir: filepath.Join(dir, "images")}, dir, imgs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
