package image_test

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/imagetest"
	"banger/internal/image/vmlinux"
	"banger/internal/progress"
	"banger/internal/store"
)

// Shared with heal_test.go.
var (
	registerFiles = imagetest.RegisterFiles
	debugfsCat    = imagetest.DebugfsCat
)

func TestRegister(t *testing.T) {
	req := registerFiles(t)
	images := t.TempDir()
	rep := &progress.Recorder{}
	img, err := image.Register(context.Background(), images, req, rep)
	if err != nil {
		t.Fatal(err)
	}
	if img.Dir != filepath.Join(images, "reg") || img.Source != "register" || img.KernelVersion != "6.1.0-test-amd64" ||
		strings.Join(img.Engines, ",") != "qemu,firecracker" || len(img.Fingerprint) != 64 {
		t.Fatalf("metadata: %+v", img)
	}
	for _, p := range []string{img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed} {
		if !strings.HasPrefix(p, img.Dir+"/") {
			t.Fatalf("artefact %q outside %s", p, img.Dir)
		}
		if _, err := os.Stat(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := exec.LookPath("debugfs"); err == nil {
		out, _ := exec.Command("debugfs", "-R", "cat /.bashrc", img.WorkSeed).Output()
		if !strings.Contains(string(out), "# hello") {
			t.Fatalf("work-seed lacks the rootfs's /root/.bashrc: %q", out)
		}
	}
	t.Logf("stages %v", rep.Names())
	ents, _ := os.ReadDir(images)
	if len(ents) != 1 {
		t.Fatalf("images dir holds %v, want only reg", ents)
	}
}

func TestRegisterBadInput(t *testing.T) {
	good := registerFiles(t)
	junk := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(junk, bytes.Repeat([]byte("not a kernel "), 2000), 0o644)
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, nil, 0o644)
	cases := []struct {
		name   string
		modify func(r *api.ImageRegisterRequest)
		want   string
	}{
		{"non-kernel", func(r *api.ImageRegisterRequest) { r.Kernel = junk }, "--kernel " + junk + ": not a kernel"},
		{"missing kernel", func(r *api.ImageRegisterRequest) { r.Kernel = "/nonexistent" }, "--kernel /nonexistent"},
		{"non-ext4 rootfs", func(r *api.ImageRegisterRequest) { r.Rootfs = junk }, "--rootfs " + junk + ": not an ext4"},
		{"kernel as rootfs", func(r *api.ImageRegisterRequest) { r.Rootfs = good.Kernel }, "not an ext4"},
		{"empty initrd", func(r *api.ImageRegisterRequest) { r.Initrd = empty }, "--initrd " + empty + ": the file is empty"},
		{"junk initrd", func(r *api.ImageRegisterRequest) { r.Initrd = junk }, "not an initramfs"},
		{"junk work-seed", func(r *api.ImageRegisterRequest) { r.WorkSeed = junk }, "--work-seed"},
		{"junk vmlinux", func(r *api.ImageRegisterRequest) { r.Vmlinux = junk }, "--vmlinux"},
		{"bad name", func(r *api.ImageRegisterRequest) { r.Name = "-x" }, "name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := good
			tc.modify(&req)
			images := t.TempDir()
			_, err := image.Register(context.Background(), images, req, nil)
			if !api.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want Invalid mentioning %q", err, tc.want)
			}
			if ents, _ := os.ReadDir(images); len(ents) != 0 {
				t.Fatalf("left %v behind", ents)
			}
		})
	}
}

func TestServiceRegisterDelete(t *testing.T) {
	ctx := context.Background()
	st := imagetest.Store(t)
	images := t.TempDir()
	svc := &image.Service{Store: st, ImagesDir: images}
	req := registerFiles(t)
	img, err := svc.Register(ctx, req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Register(ctx, req, nil); !api.IsAlreadyExists(err) {
		t.Fatalf("second register: %v, want AlreadyExists", err)
	}
	child := api.Image{Name: "kid", Parent: img.Name, Source: "build", Managed: true, Dir: filepath.Join(images, "kid")}
	if err := st.CreateImage(ctx, &child); err != nil {
		t.Fatal(err)
	}
	vm := api.VM{Name: "user-vm", ImageID: img.ID, ImageName: img.Name, VCPUs: 1, MemoryMiB: 256}
	if err := st.CreateVM(ctx, &vm, store.Alloc{Subnet: netip.MustParsePrefix("10.123.0.0/24")}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, img.Name, true); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "user-vm") {
		t.Fatalf("delete while a vm uses it: %v", err)
	}
	if err := st.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := svc.Delete(ctx, img.Name, false); !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "kid") {
		t.Fatalf("delete with a child: %v", err)
	}
	if err := svc.Delete(ctx, img.Name, true); err != nil {
		t.Fatalf("forced delete: %v", err)
	}
	if _, err := st.GetImage(ctx, img.Name); !api.IsNotFound(err) {
		t.Fatalf("row still there: %v", err)
	}
	if _, err := os.Stat(img.Dir); !os.IsNotExist(err) {
		t.Fatalf("dir still there: %v", err)
	}
	if err := svc.Delete(ctx, "nope", false); !api.IsNotFound(err) {
		t.Fatalf("delete missing: %v", err)
	}
}

// TestRegisterELFOnly: an uncompressed kernel is used as the vmlinux and
// the image is Firecracker-only (QEMU microvm needs the bzImage).
func TestRegisterELFOnly(t *testing.T) {
	req := registerFiles(t)
	bz, _ := os.ReadFile(req.Kernel)
	elfKernel, err := vmlinux.Extract(bz)
	if err != nil {
		t.Fatal(err)
	}
	req.Kernel = filepath.Join(t.TempDir(), "vmlinux")
	os.WriteFile(req.Kernel, elfKernel, 0o644)
	img, err := image.Register(context.Background(), t.TempDir(), req, nil)
	if err != nil {
		t.Fatal(err)
	}
	if img.Kernel != "" || img.Vmlinux == "" || strings.Join(img.Engines, ",") != "firecracker" {
		t.Fatalf("ELF-only image: kernel=%q vmlinux=%q engines=%v", img.Kernel, img.Vmlinux, img.Engines)
	}
}
